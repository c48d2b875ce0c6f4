//! The `codex-as-api` binary: the command line of [`codex_as_api::cli::app`].

fn main() -> std::process::ExitCode {
    codex_as_api::cli::app::run(std::env::args_os())
}
