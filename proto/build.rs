//! Compiles the `.proto` files with `protox` (pure Rust), so a fresh machine needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/cocon/auth/v1/auth.proto",
        "proto/cocon/documents/v1/documents.proto",
        "proto/cocon/events/v1/events.proto",
        "proto/cocon/files/v1/files.proto",
        "proto/cocon/jobs/v1/jobs.proto",
        "proto/cocon/notifications/v1/notifications.proto",
        "proto/cocon/sharing/v1/sharing.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // `bytes` fields as `bytes::Bytes`: documents pass through without copies.
        .bytes(".")
        // An upload's header is one message; its data parts should not each be as large.
        .boxed(".cocon.files.v1.UploadPart.part.header")
        .boxed(".cocon.files.v1.DownloadPart.part.head")
        .boxed(".cocon.files.v1.SharedPart.part.header")
        .compile_fds(fds)?;
    Ok(())
}
