//! Compiles `shop/v1/products.proto` with protox (pure Rust, no system `protoc`), the
//! same way the `weft-proto` crate compiles the mesh's own API.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["shop/v1/products.proto"];
    for file in files {
        println!("cargo:rerun-if-changed=proto/{file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
