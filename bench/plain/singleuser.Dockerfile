# The hand-made singleuser image: the same packages as hubops' `base` variant, with
# Jupyter's defaults (no trimmed extensions, no settings).
ARG BASE_IMAGE=hubops/base:bookworm
FROM ${BASE_IMAGE}
COPY hubops-ca.crt /usr/local/share/ca-certificates/extra.crt
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates python3 \
        python3-venv tini git \
    && update-ca-certificates && rm -rf /var/lib/apt/lists/*
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install jupyterhub==5.5.4 jupyterlab==4.6.6 ipykernel==7.4.0
RUN useradd -m -u 1000 -g 100 jovyan && mkdir -p /home/jovyan/work && chown -R 1000:100 /home/jovyan
ENV PATH=/opt/venv/bin:$PATH
USER 1000:100
WORKDIR /home/jovyan/work
CMD ["jupyterhub-singleuser"]
