//! `flood MIB` writes MIB mebibytes to stdout in 64 KiB writes, then a final
//! line on stderr. Used to prove the host streams guest output instead of
//! collecting it.

use std::io::Write;

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut chunk = vec![b'x'; 64 * 1024];
    chunk[64 * 1024 - 1] = b'\n';
    let mut out = std::io::stdout().lock();
    for _ in 0..mib * 16 {
        if let Err(e) = out.write_all(&chunk) {
            eprintln!("flood: write failed: {e}");
            std::process::exit(1);
        }
    }
    let _ = out.flush();
    eprintln!("flood: wrote {mib} MiB");
}
