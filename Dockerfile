# rotor operator image: a static binary on an empty base, running as non-root.
# Build: docker build -t rotor .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Statically linked (glibc, crt-static): the runtime image has no libc.
ENV RUSTFLAGS="-C target-feature=+crt-static"
RUN cargo build --release --locked --target x86_64-unknown-linux-gnu \
 && cp target/x86_64-unknown-linux-gnu/release/rotor /rotor \
 && strip /rotor \
 && /rotor --version

FROM scratch
# CA roots for provider TLS (rustls reads the system store).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /rotor /usr/local/bin/rotor
ENV PATH=/usr/local/bin
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["rotor", "run"]
