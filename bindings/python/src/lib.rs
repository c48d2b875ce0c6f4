//! `codex_as_api._native`: the Python package's Rust half, over the crate's public facade
//! (`ConfigBuilder`, `Provider`, `cli::app::run`) and nothing else.
//!
//! Owns: one multi-thread Tokio runtime per process, shared by every provider; moving
//! requests and answers across the boundary as JSON text (the Python half builds its
//! dataclasses and event dicts from it); turning an [`Error`] into the Python exception
//! its kind maps to (`codex_as_api._errors._from_native`); running calls with the GIL
//! released (blocking ones detach, async ones run on the runtime and report to a Python
//! callback that settles an asyncio future); running the command line in-process.
//!
//! Does not own: any translation or protocol rule (the core crate's), the public Python
//! names, types and option handling (`python/codex_as_api/`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use codex_as_api::error::Protocol;
use codex_as_api::{ChatStream, ConfigBuilder, Error, Provider};
use futures_util::StreamExt;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio::sync::Mutex;
use tokio::task::AbortHandle;

/// The process's runtime (built on first use; a build failure is remembered and reported).
fn runtime() -> PyResult<&'static Runtime> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("codex-as-api")
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the async runtime: {e}")))
}

/// The Python exception for `e` (its class chosen by `_errors._from_native` from the kind).
fn exception(py: Python<'_>, e: &Error) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let value = py
            .import("codex_as_api._errors")?
            .getattr("_from_native")?
            .call1((
                format!("{:?}", e.kind()),
                e.status(Protocol::OpenAi),
                e.message.as_str(),
                e.code.as_deref(),
                e.retry_after,
            ))?;
        Ok(PyErr::from_value(value))
    };
    build().unwrap_or_else(|err| err)
}

fn parse(body: &str) -> Result<Value, Error> {
    serde_json::from_str(body).map_err(|e| Error::bad_request(format!("request JSON: {e}")))
}

fn text<T: serde::Serialize>(v: &T) -> Result<String, Error> {
    serde_json::to_string(v).map_err(|e| Error::internal(format!("answer JSON: {e}")))
}

/// One non-streaming call of the facade, by name.
async fn dispatch(
    provider: Arc<Provider>,
    op: String,
    body: Option<String>,
) -> Result<String, Error> {
    let body = || parse(body.as_deref().unwrap_or("{}"));
    match op.as_str() {
        "chat" => text(&provider.chat(body()?).await?),
        "responses" => text(&provider.responses(body()?).await?),
        "messages" => text(&provider.messages(body()?).await?),
        "images" => text(&provider.images(body()?).await?),
        "inspect" => text(&provider.inspect(body()?).await?),
        "compact" => text(&provider.compact(body()?).await?),
        "models" => text(&provider.models().await?),
        "usage" => text(&provider.usage().await?),
        other => Err(Error::internal(format!("no such call: {other}"))),
    }
}

/// Run `fut` on the runtime and hand its outcome to `done(value, None)` or
/// `done(None, exception)`, called from a runtime thread with the GIL held.
fn spawn_reporting<T, F>(done: Py<PyAny>, fut: F) -> PyResult<NativeTask>
where
    T: for<'py> IntoPyObject<'py> + Send + 'static,
    F: Future<Output = Result<T, Error>> + Send + 'static,
{
    let handle = runtime()?.spawn(async move {
        let outcome = fut.await;
        Python::attach(|py| {
            let called = match outcome {
                Ok(v) => done.call1(py, (Some(v), None::<Py<PyAny>>)),
                Err(e) => {
                    let exc = exception(py, &e).into_value(py).into_any();
                    done.call1(py, (None::<T>, Some(exc)))
                }
            };
            if let Err(err) = called {
                err.write_unraisable(py, None);
            }
        });
    });
    Ok(NativeTask {
        handle: handle.abort_handle(),
    })
}

/// A running async call; `cancel()` drops it (and with it the upstream request).
#[pyclass(frozen, module = "codex_as_api._native")]
struct NativeTask {
    handle: AbortHandle,
}

#[pymethods]
impl NativeTask {
    fn cancel(&self) {
        self.handle.abort();
    }
}

/// The facade's `Provider`.
#[pyclass(frozen, module = "codex_as_api._native")]
struct NativeProvider {
    inner: Arc<Provider>,
}

#[pymethods]
impl NativeProvider {
    /// Settings from the `CODEX_AS_API_*` environment (as `codex-as-api serve` reads it),
    /// each argument given overriding its variable.
    #[new]
    #[pyo3(signature = (model=None, auth_json_path=None, base_url=None, timeout_secs=None, demo=false))]
    fn new(
        py: Python<'_>,
        model: Option<String>,
        auth_json_path: Option<PathBuf>,
        base_url: Option<String>,
        timeout_secs: Option<u64>,
        demo: bool,
    ) -> PyResult<Self> {
        let rt = runtime()?;
        let made = py.detach(|| {
            let mut b = ConfigBuilder::from_env()?;
            if let Some(m) = model {
                b = b.model(m);
            }
            if let Some(p) = auth_json_path {
                b = b.auth_path(p);
            }
            if let Some(u) = base_url {
                b = b.upstream_url(u);
            }
            if let Some(t) = timeout_secs {
                b = b.stream_idle_timeout_secs(t);
            }
            if demo {
                b = b.demo(true);
            }
            let config = b.build()?;
            rt.block_on(Provider::new(config))
        });
        match made {
            Ok(p) => Ok(NativeProvider { inner: Arc::new(p) }),
            Err(e) => Err(exception(py, &e)),
        }
    }

    /// The model requests name when the caller names none.
    #[getter]
    fn model(&self) -> String {
        self.inner.config().model.clone()
    }

    /// The backend root in use.
    #[getter]
    fn base_url(&self) -> String {
        self.inner.config().upstream_url.clone()
    }

    /// A blocking call (GIL released) → the answer as JSON text.
    #[pyo3(signature = (op, body=None))]
    fn call(&self, py: Python<'_>, op: String, body: Option<String>) -> PyResult<String> {
        let rt = runtime()?;
        let provider = Arc::clone(&self.inner);
        py.detach(|| rt.block_on(dispatch(provider, op, body)))
            .map_err(|e| exception(py, &e))
    }

    /// The same call on the runtime; `done(json_text, None)` or `done(None, exception)`.
    #[pyo3(signature = (op, body, done))]
    fn call_async(
        &self,
        op: String,
        body: Option<String>,
        done: Py<PyAny>,
    ) -> PyResult<NativeTask> {
        spawn_reporting(done, dispatch(Arc::clone(&self.inner), op, body))
    }

    /// A streamed chat (blocking until the answer begins: an early error raises here).
    fn chat_stream(&self, py: Python<'_>, body: String) -> PyResult<NativeStream> {
        let rt = runtime()?;
        let provider = Arc::clone(&self.inner);
        py.detach(|| rt.block_on(async move { provider.chat_stream(parse(&body)?).await }))
            .map(NativeStream::new)
            .map_err(|e| exception(py, &e))
    }

    /// The same on the runtime; `done(NativeStream, None)` or `done(None, exception)`.
    fn chat_stream_async(&self, body: String, done: Py<PyAny>) -> PyResult<NativeTask> {
        let provider = Arc::clone(&self.inner);
        spawn_reporting(done, async move {
            provider
                .chat_stream(parse(&body)?)
                .await
                .map(NativeStream::new)
        })
    }
}

/// A streamed chat answer: `ChatEvent`s as JSON text (`{"type": "text", …}`), `None` at the
/// end. `close()` (or dropping it) cancels the request upstream.
#[pyclass(frozen, module = "codex_as_api._native")]
struct NativeStream {
    inner: Arc<Mutex<Option<ChatStream>>>,
}

impl NativeStream {
    fn new(stream: ChatStream) -> NativeStream {
        NativeStream {
            inner: Arc::new(Mutex::new(Some(stream))),
        }
    }
}

/// The next event of `stream` as JSON text; `None` once it has ended or was closed.
async fn next_event(stream: Arc<Mutex<Option<ChatStream>>>) -> Result<Option<String>, Error> {
    let mut guard = stream.lock().await;
    let Some(s) = guard.as_mut() else {
        return Ok(None);
    };
    match s.next().await {
        Some(Ok(ev)) => text(&ev).map(Some),
        Some(Err(e)) => {
            *guard = None;
            Err(e)
        }
        None => {
            *guard = None;
            Ok(None)
        }
    }
}

#[pymethods]
impl NativeStream {
    /// The next event, blocking with the GIL released.
    fn next(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let rt = runtime()?;
        let stream = Arc::clone(&self.inner);
        py.detach(|| rt.block_on(next_event(stream)))
            .map_err(|e| exception(py, &e))
    }

    /// The next event on the runtime; `done(json_text_or_None, None)` or `done(None, exc)`.
    fn next_async(&self, done: Py<PyAny>) -> PyResult<NativeTask> {
        spawn_reporting(done, next_event(Arc::clone(&self.inner)))
    }

    /// Stop reading: the upstream request is cancelled. Never blocks: while a read is in
    /// flight (an async one being cancelled), the stream is dropped when it lets go.
    fn close(&self) -> PyResult<()> {
        let rt = runtime()?;
        let _entered = rt.enter();
        match self.inner.try_lock() {
            Ok(mut guard) => drop(guard.take()),
            Err(_) => {
                let stream = Arc::clone(&self.inner);
                rt.spawn(async move { stream.lock().await.take() });
            }
        }
        Ok(())
    }
}

/// Run the `codex-as-api` command line in this process with the GIL released; `argv` starts
/// with the program name. Returns the exit status.
#[pyfunction]
fn run_cli(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.detach(|| {
        let code = codex_as_api::cli::app::run(argv);
        (0..=u8::MAX)
            .find(|n| ExitCode::from(*n) == code)
            .unwrap_or(1)
    })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeProvider>()?;
    m.add_class::<NativeStream>()?;
    m.add_class::<NativeTask>()?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
