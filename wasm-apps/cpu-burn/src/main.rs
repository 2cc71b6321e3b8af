//! `cpu-burn [--iterations N] [--report-every N]`
//!
//! Spins on arithmetic. Without `--iterations` it never stops on its own, so
//! only a limit (timeout, fuel, stop) ends it. `--report-every N` prints
//! `progress K` after every N iterations so a test can see it advance.

fn main() {
    let mut iterations: Option<u64> = None;
    let mut report_every: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match arg.as_str() {
            "--iterations" => iterations = value,
            "--report-every" => report_every = value,
            other => {
                eprintln!("cpu-burn: unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut i: u64 = 0;
    let mut reports: u64 = 0;
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        i += 1;
        if let Some(every) = report_every
            && i % every == 0
        {
            reports += 1;
            println!("progress {reports}");
        }
        if iterations == Some(i) {
            break;
        }
    }
    println!("done {i} {x:x}");
}
