//! `sleeper [--until-stdin-eof]`
//!
//! Sleeps until stopped. With `--until-stdin-eof` it instead waits for its
//! stdin to close and then exits 0: this is how a guest takes part in a
//! graceful stop, since skiff closes a task's stdin when asked to stop it.

use std::io::Read;

fn main() {
    println!("sleeper: started");
    if std::env::args().any(|a| a == "--until-stdin-eof") {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        println!("sleeper: stdin closed, exiting");
        return;
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
