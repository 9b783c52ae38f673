# kong-db-init: a small non-root image holding the program and the Node runtime it needs under
# /opt/kong-db-init (launcher, node, app/ with the bundle, lib/ with a C++ runtime old enough for
# glibc 2.28, used by `install DIR` copies in images without their own libstdc++, and by this
# image's own node).
#
#   docker build -t kong-db-init .                                  # distroless, uid 65532
#   docker build -t kong-db-init-aio:3.7.1 \
#     --build-arg BASE=kong:3.7.1 --build-arg USER=kong .           # all-in-one, FROM a Kong image
#
# Works with readOnlyRootFilesystem: true (it writes only to $TMPDIR, the status file and, for
# `install DIR`, DIR). No `# syntax=` line (BuildKit would pull that frontend image): builds with
# the legacy builder, needing only the npm registry and Debian mirror besides the base images.
#
# Size (bench/image-size.ts measures what `docker push` uploads): the base is distroless static
# (CA certificates, tzdata, passwd; no libc) plus only the part of Debian 12's glibc that a C/C++
# program uses, taken from NODE_IMAGE. Not distroless cc (or base): Node carries its own OpenSSL
# and ICU, so their libssl3 and glibc's iconv modules (gconv) would be dead weight, and cc's
# libstdc++/libgcc_s would duplicate lib/. Pushed: 9.0 MB of base layers with cc, 2.3 MB so.
# NODE_IMAGE and DISTROLESS must be the same Debian release (12: bookworm).
ARG NODE_IMAGE=node:24-bookworm-slim
# libstdc++/libgcc_s for the installed copy's fallback: bullseye's need only glibc 2.18 (Node: 2.28)
ARG LIBS_IMAGE=debian:bullseye-slim
ARG DISTROLESS=gcr.io/distroless/static-debian12:nonroot
# what the program is added to: `distroless-glibc` (the stage below), or a Kong image (all-in-one)
ARG BASE=distroless-glibc

FROM ${LIBS_IMAGE} AS libs
RUN mkdir /libs \
 && cp -L "$(ls /usr/lib/*-linux-gnu/libstdc++.so.6)" "$(ls /lib/*-linux-gnu/libgcc_s.so.1)" /libs/

FROM ${NODE_IMAGE} AS build
# binutils: `strip` takes the symbol table and debug info out of node (127 MB -> 108 MB)
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null \
 && rm -rf /var/lib/apt/lists/*
# glibc for distroless static: the loader, libc and the libraries split off it (libm, libdl,
# libpthread, librt, libresolv) and the NSS modules distroless' nsswitch.conf names (files, compat,
# dns), with the package's status entry where scanners look in distroless (status.d); and, in the
# multiarch directory, links to our C++ runtime (in a base with a C++ runtime of its own, as in the
# all-in-one image, this stage is not used and that runtime stays in charge)
RUN set -e; mkdir /glibc; \
    dpkg -L libc6 | grep -E '/(ld-linux[^/]*|lib(c|m|dl|pthread|rt|resolv|nss_files|nss_compat|nss_dns))\.so\.[0-9]+$' \
      | while read -r f; do cp -a --parents "$f" /glibc/; done; \
    multiarch=$(dirname "$(dpkg -L libc6 | grep '/libc\.so\.6$')"); \
    ln -s /opt/kong-db-init/lib/libstdc++.so.6 /opt/kong-db-init/lib/libgcc_s.so.1 "/glibc$multiarch/"; \
    mkdir -p /glibc/var/lib/dpkg/status.d; \
    dpkg -s libc6 >/glibc/var/lib/dpkg/status.d/libc6
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
# the program installs itself (bundle + this Node binary, stripped) ...
RUN npm run build \
 && node dist/cli.js install /out/opt/kong-db-init \
 && strip --strip-all /out/opt/kong-db-init/node
# ... with the old C++ runtime from `libs` (an installed copy's `install DIR` ships its own lib/)
COPY --from=libs /libs/ /out/opt/kong-db-init/lib/
RUN env -i /out/opt/kong-db-init/kong-db-init --version \
 && env -i LD_LIBRARY_PATH=/out/opt/kong-db-init/lib /out/opt/kong-db-init/node --version

FROM ${DISTROLESS} AS distroless-glibc
COPY --from=build /glibc/ /

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
