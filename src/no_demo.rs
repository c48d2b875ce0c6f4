//! The `demo` feature is off: there is no emulator in this build, and `--demo` is refused
//! with a message saying so.

use crate::config::Config;
use crate::error::Error;

/// Never built: `start_if` refuses `config.demo`.
pub struct Demo;

impl Demo {
    pub async fn start_if(config: &mut Config) -> Result<Option<Demo>, Error> {
        if config.demo {
            return Err(Error::bad_request(
                "--demo needs the built-in emulator, which this build leaves out (the `demo` feature)",
            ));
        }
        Ok(None)
    }
}
