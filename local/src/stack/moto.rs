//! moto, the AWS emulator the local stack runs DynamoDB and SQS in: one server per test
//! process on 127.0.0.1, watched by `local/scripts/moto_guard.py`.

use super::{moto_guard, venv_python};
use anyhow::{Context, Result, anyhow, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A moto server on 127.0.0.1, run by `local/scripts/moto_guard.py` from the project venv.
///
/// The guard watches the test process and stops moto as soon as it is gone, so even the shared
/// instance (never dropped) leaves nothing running. An owned instance ([`Moto::start`]) is also
/// killed, by its pid, when dropped.
#[derive(Debug)]
pub struct Moto {
    endpoint: String,
    port: u16,
    child: Mutex<Option<Child>>,
}

static SHARED: OnceLock<Result<Moto, String>> = OnceLock::new();

impl Moto {
    /// The one moto server of this test process, started on first use.
    ///
    /// Tests that share it must isolate themselves with their own resource names
    /// ([`unique_prefix`]) and must not call [`Moto::reset`] on it.
    ///
    /// # Panics
    /// If moto cannot be started; the message says why (e.g. the venv is missing).
    pub fn shared() -> &'static Moto {
        match Self::try_shared() {
            Ok(moto) => moto,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// Like [`Moto::shared`], returning the start-up error instead of panicking.
    pub fn try_shared() -> Result<&'static Moto> {
        match SHARED.get_or_init(|| Moto::start().map_err(|e| format!("{e:#}"))) {
            Ok(moto) => Ok(moto),
            Err(e) => Err(anyhow!("{e}")),
        }
    }

    /// Starts a moto server of its own, on a free loopback port; it is stopped on drop.
    pub fn start() -> Result<Moto> {
        let python = venv_python();
        if !python.exists() {
            bail!(
                "moto needs the project venv, but {} does not exist: run `make venv` (dev/venv.sh)",
                python.display()
            );
        }
        let guard = moto_guard();
        let mut child = Command::new(&python)
            .arg(&guard)
            .arg("0")
            .arg(std::process::id().to_string())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} {}", python.display(), guard.display()))?;
        match Self::wait_for_port(&mut child) {
            Ok(port) => Ok(Moto {
                endpoint: format!("http://127.0.0.1:{port}"),
                port,
                child: Mutex::new(Some(child)),
            }),
            Err(e) => {
                stop_child(&mut child);
                Err(e.context(format!(
                    "moto did not start from {}: check the venv (run `make venv`)",
                    python.display()
                )))
            }
        }
    }

    fn wait_for_port(child: &mut Child) -> Result<u16> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let stdout = child
            .stdout
            .take()
            .context("moto guard has no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            // The receiver may be gone after a timeout; nothing to do then.
            let _ = tx.send(read.map(|_| line));
        });
        let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(anyhow!(e).context("reading the moto guard's port line")),
            Err(_) => bail!(
                "moto guard printed no port within {}s",
                STARTUP_TIMEOUT.as_secs()
            ),
        };
        let Some(port) = line
            .trim()
            .strip_prefix("MOTO_PORT=")
            .and_then(|p| p.parse::<u16>().ok())
        else {
            let status = child.try_wait().ok().flatten();
            bail!(
                "moto guard exited or misbehaved before listening (printed {line:?}, exit status {status:?}; its stderr is above)"
            );
        };
        loop {
            if http_answers(port) {
                return Ok(port);
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!("moto guard exited with {status} before answering HTTP");
            }
            if Instant::now() > deadline {
                bail!(
                    "moto on 127.0.0.1:{port} did not answer HTTP within {}s",
                    STARTUP_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The loopback port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pid of the guard process (the one that runs moto).
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(Child::id))
    }

    /// Clears all moto state (`POST /moto-api/reset`). Never on [`Moto::shared`] while other
    /// tests may be using it.
    pub async fn reset(&self) -> Result<()> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?;
        let resp = client
            .post(format!("{}/moto-api/reset", self.endpoint))
            .send()
            .await
            .context("POST /moto-api/reset")?;
        if !resp.status().is_success() {
            bail!("POST /moto-api/reset answered {}", resp.status());
        }
        Ok(())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Ok(mut guard) = self.child.lock()
            && let Some(mut child) = guard.take()
        {
            stop_child(&mut child);
        }
    }
}

/// Kills the child by its pid and reaps it.
fn stop_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// True when something on 127.0.0.1:`port` answers an HTTP request.
fn http_answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::stack::sdk_config;
    use aws_config::SdkConfig;

    fn sdk_clients(sdk: &SdkConfig) -> (aws_sdk_dynamodb::Client, aws_sdk_sqs::Client) {
        (
            aws_sdk_dynamodb::Client::new(sdk),
            aws_sdk_sqs::Client::new(sdk),
        )
    }

    #[tokio::test]
    async fn shared_moto_answers_on_loopback() {
        let moto = Moto::shared();
        assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
        assert!(http_answers(moto.port()));
        // The same instance every time.
        assert!(std::ptr::eq(moto, Moto::shared()));
        let sdk = sdk_config(moto.endpoint()).await;
        let (_, sqs) = sdk_clients(&sdk);
        sqs.list_queues().send().await.unwrap();
    }

    #[tokio::test]
    async fn owned_moto_resets_and_stops_on_drop() {
        let moto = Moto::start().unwrap();
        let port = moto.port();
        let pid = moto.pid().unwrap();
        let sdk = sdk_config(moto.endpoint()).await;
        let (_, sqs) = sdk_clients(&sdk);
        sqs.create_queue()
            .queue_name("before-reset")
            .send()
            .await
            .unwrap();
        moto.reset().await.unwrap();
        let listed = sqs.list_queues().send().await.unwrap();
        assert!(listed.queue_urls().is_empty(), "reset left {listed:?}");
        drop(moto);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        assert!(!http_answers(port));
    }

    #[test]
    fn guard_exits_when_the_watched_process_is_gone() {
        let mut watched = Command::new("sleep").arg("60").spawn().unwrap();
        let mut guard = Command::new(venv_python())
            .arg(moto_guard())
            .arg("0")
            .arg(watched.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let port = Moto::wait_for_port(&mut guard).unwrap();
        assert!(http_answers(port));
        watched.kill().unwrap();
        watched.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = guard.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                stop_child(&mut guard);
                panic!("moto guard still running after its watched process ended");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "guard exited with {status}");
        assert!(!http_answers(port));
    }
}
