//! `sleeper [--until-stdin-eof | --for SECONDS]`
//!
//! Sleeps until stopped. With `--until-stdin-eof` it instead waits for its
//! stdin to close and then exits 0: this is how a guest takes part in a
//! graceful stop, since skiff closes a task's stdin when asked to stop it.
//! With `--for SECONDS` it sleeps that long and exits 0 (a slow init
//! container).

use std::io::Read;

fn main() {
    println!("sleeper: started");
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--for") {
        let Some(seconds) = args.get(i + 1).and_then(|s| s.parse::<f64>().ok()) else {
            eprintln!("sleeper: --for needs a number of seconds");
            std::process::exit(2);
        };
        std::thread::sleep(std::time::Duration::from_secs_f64(seconds));
        println!("sleeper: slept {seconds} s");
        return;
    }
    if args.iter().any(|a| a == "--until-stdin-eof") {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        println!("sleeper: stdin closed, exiting");
        return;
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
