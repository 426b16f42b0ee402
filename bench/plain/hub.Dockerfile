# The hand-made setup hubops is compared with: JupyterHub, DockerSpawner and
# configurable-http-proxy in one image, as a lab admin usually writes it. Same base and the
# same pinned versions as hubops; the CA bundle is trusted so that pip and npm work here.
ARG BASE_IMAGE=hubops/base:bookworm
FROM ${BASE_IMAGE}
COPY hubops-ca.crt /usr/local/share/ca-certificates/extra.crt
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates python3 \
        python3-venv nodejs npm \
    && update-ca-certificates && rm -rf /var/lib/apt/lists/*
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
RUN npm install -g configurable-http-proxy@4.6.3
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install jupyterhub==5.5.4 dockerspawner==14.0.0
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /srv/jupyterhub
CMD ["jupyterhub", "-f", "/srv/jupyterhub/jupyterhub_config.py"]
