# shellcheck shell=sh
# /etc/profile.d/hubops-python.sh: what login shells add for the user (JupyterLab's terminal
# runs `bash -l`; so does `docker exec -it <server> bash -l`). The image's Python, pip and
# jupyter are in /usr/local/bin and /usr/bin, which Debian's /etc/profile keeps; the commands
# of packages the user installed (pip install, as the user) are in ~/.local/bin.
case ":${PATH}:" in
    *":${HOME}/.local/bin:"*) ;;
    *) PATH="${HOME}/.local/bin:${PATH}" ;;
esac
export PATH

# Packages a user installed live in ~/.local/lib/pythonX.Y, for one Python minor version. An
# image with another Python does not use them: say so, at every login shell, until they go.
_hubops_python="$(python3 -c 'import sys; print("python%d.%d" % sys.version_info[:2])' 2>/dev/null)"
for _hubops_site in "${HOME}"/.local/lib/python3.*/site-packages; do
    [ -d "${_hubops_site}" ] || continue
    _hubops_old="${_hubops_site%/site-packages}"
    [ "${_hubops_old##*/}" = "${_hubops_python}" ] && continue
    [ -n "$(ls -A "${_hubops_site}" 2>/dev/null)" ] || continue
    printf 'hubops: the packages you installed for %s are not used: this server runs %s.\n' \
        "${_hubops_old##*/}" "${_hubops_python}" >&2
    printf '        Install them again (pip install ...), then remove %s\n' "${_hubops_old}" >&2
done
unset _hubops_python _hubops_site _hubops_old
