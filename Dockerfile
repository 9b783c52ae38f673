# syntax=docker/dockerfile:1
# kong-db-init: a small non-root image holding the program and the Node runtime it needs under
# /opt/kong-db-init (launcher, node, app/ with the bundle, lib/ with the C++ runtime libraries).
#
#   docker build -t kong-db-init .                                  # distroless, uid 65532
#   docker build -t kong-db-init-aio:3.7.1 \
#     --build-arg BASE=kong:3.7.1 --build-arg USER=kong .           # all-in-one, FROM a Kong image
#
# Works with readOnlyRootFilesystem: true (it writes only to $TMPDIR, the status file and, for
# `install DIR`, DIR).
ARG NODE_IMAGE=node:24-bookworm-slim
ARG BASE=gcr.io/distroless/cc-debian12:nonroot

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
# the program installs itself: bundle + this Node binary + libstdc++/libgcc_s it links against
RUN npm run build \
 && node dist/cli.js install /out/opt/kong-db-init \
 && env -i /out/opt/kong-db-init/kong-db-init --version

FROM ${BASE}
ARG VERSION=0.1.0
ARG USER=65532:65532
LABEL org.opencontainers.image.title="kong-db-init" \
      org.opencontainers.image.description="Runs Kong Gateway database migrations safely from a Kubernetes init container" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/kong-db-init/kong-db-init"
COPY --from=build /out/opt/kong-db-init /opt/kong-db-init
ENV PATH="/opt/kong-db-init:${PATH}"
USER ${USER}
# exec form, no shell needed (distroless has none)
ENTRYPOINT ["/opt/kong-db-init/node", "/opt/kong-db-init/app/cli.js"]
CMD ["--help"]
