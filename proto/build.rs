//! Compiles `weft/v1/*.proto` with protox (pure Rust), so a fresh machine needs no
//! system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "weft/v1/resources.proto",
        "weft/v1/discovery.proto",
        "weft/v1/admin.proto",
        "weft/v1/identity.proto",
        "grpc/health/v1/health.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
