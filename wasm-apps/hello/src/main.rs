//! `hello [--exit CODE] [ARGS...]`
//!
//! Greets `$NAME` (or "world"), prints every argument on its own line and
//! exits with CODE (default 0). The smallest useful guest: it shows that
//! arguments, the environment, stdout and exit codes reach the host intact.

use std::process::ExitCode;

fn main() -> ExitCode {
    let name = std::env::var("NAME").unwrap_or_else(|_| "world".to_string());
    println!("Hello, {name}!");
    let mut code: u8 = 0;
    let mut args = std::env::args().enumerate();
    while let Some((i, arg)) = args.next() {
        println!("arg[{i}]={arg}");
        if arg == "--exit" {
            let Some((j, value)) = args.next() else {
                eprintln!("hello: --exit needs a code");
                return ExitCode::from(2);
            };
            println!("arg[{j}]={value}");
            match value.parse() {
                Ok(c) => code = c,
                Err(_) => {
                    eprintln!("hello: bad exit code {value:?}");
                    return ExitCode::from(2);
                }
            }
        }
    }
    exit(code)
}

#[cfg(all(target_os = "wasi", target_env = "p2"))]
fn exit(code: u8) -> ExitCode {
    use std::io::Write;
    if code == 0 {
        return ExitCode::SUCCESS;
    }
    let _ = std::io::stdout().flush();
    wasip2::cli::exit::exit_with_code(code);
    ExitCode::from(code)
}

#[cfg(not(all(target_os = "wasi", target_env = "p2")))]
fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}
