//! Command line: parse flags, build the configuration, start logging, run the server.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Ok(cfg) = switchboard::Config::embedded() else {
        return ExitCode::FAILURE;
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(switchboard::run(cfg, async {
        let _ = tokio::signal::ctrl_c().await;
    })) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: {e}");
            ExitCode::FAILURE
        }
    }
}
