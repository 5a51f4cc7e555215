//! A minimal Chrome DevTools Protocol client driving headless Chromium: pages, script
//! evaluation, virtual authenticators, screenshots. Shared by the page tests here and the
//! customer web app's end-to-end tests of the `kinko` binary (`crates/kinko/tests/it/webapp.rs`
//! includes this file).
//!
//! Chromium runs with its own profile in a temporary directory and a DevTools port the OS picks
//! (read back from `DevToolsActivePort`); one WebSocket carries the commands for every page
//! through flattened target sessions. A missing chromium fails the tests: install it with
//! `scripts/install-test-deps` (or point `KINKO_CHROMIUM` at a binary).
#![allow(dead_code)]

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one DevTools command may take to answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long Chromium may take to open its DevTools port.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a navigation may take to fire its load event.
const LOAD_TIMEOUT: Duration = Duration::from_secs(15);
const LAUNCH_POLL: Duration = Duration::from_millis(50);
/// Events kept while waiting for something else (the oldest are dropped).
const EVENTS_MAX: usize = 256;
/// The tail of Chromium's own log quoted in errors.
const LOG_TAIL_BYTES: usize = 2000;

/// One page (tab), driven through its flattened session.
pub struct Page {
    pub target_id: String,
    pub session_id: String,
}

/// A headless Chromium, killed when dropped.
pub struct Browser {
    child: Child,
    dir: tempfile::TempDir,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Events read while waiting for a reply, for a later `wait_event`.
    events: VecDeque<Value>,
}

/// `KINKO_CHROMIUM`, else /usr/bin/chromium, else `chromium` on the PATH.
fn chromium_path() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("KINKO_CHROMIUM") {
        return Ok(PathBuf::from(p));
    }
    let debian = PathBuf::from("/usr/bin/chromium");
    if debian.is_file() {
        return Ok(debian);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "chromium not found (KINKO_CHROMIUM, /usr/bin/chromium, PATH): \
             run scripts/install-test-deps"
                .to_string()
        })
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read(dir.join("chromium.log")).unwrap_or_default();
    let tail = &log[log.len().saturating_sub(LOG_TAIL_BYTES)..];
    format!("chromium log (tail):\n{}", String::from_utf8_lossy(tail))
}

/// Waits for `DevToolsActivePort` (line 1 the port, line 2 the browser's WebSocket path) and
/// connects to it, retrying until the deadline in case the file was read half written.
async fn connect_devtools(
    child: &mut Child,
    dir: &Path,
) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, String> {
    let deadline = Instant::now() + LAUNCH_TIMEOUT;
    let port_file = dir.join("DevToolsActivePort");
    let mut last_error = String::from("no DevToolsActivePort");
    loop {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                if let (Ok(port), true) = (port.trim().parse::<u16>(), path.starts_with('/')) {
                    let url = format!("ws://127.0.0.1:{port}{}", path.trim());
                    match timeout_at(deadline, tokio_tungstenite::connect_async(&url)).await {
                        Ok(Ok((ws, _))) => return Ok(ws),
                        Ok(Err(e)) => last_error = format!("connect {url}: {e}"),
                        Err(_) => last_error = format!("connect {url}: timed out"),
                    }
                }
            }
        }
        if let Some(status) = child.try_wait().map_err(|e| format!("chromium: {e}"))? {
            return Err(format!("chromium exited during start-up: {status}"));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "chromium gave no DevTools endpoint within {LAUNCH_TIMEOUT:?}: {last_error}"
            ));
        }
        tokio::time::sleep(LAUNCH_POLL).await;
    }
}

impl Browser {
    /// Starts headless Chromium; an error (never a skip) when it is not installed.
    pub async fn launch() -> Result<Browser, String> {
        let exe = chromium_path()?;
        let dir = tempfile::tempdir().map_err(|e| format!("temporary profile: {e}"))?;
        let log = std::fs::File::create(dir.path().join("chromium.log"))
            .map_err(|e| format!("chromium log: {e}"))?;
        let mut child = Command::new(&exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", dir.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start {}: {e}", exe.display()))?;
        match connect_devtools(&mut child, dir.path()).await {
            Ok(ws) => Ok(Browser {
                child,
                dir,
                ws,
                next_id: 1,
                events: VecDeque::new(),
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("{e}\n{}", log_tail(dir.path())))
            }
        }
    }

    /// The next DevTools message, or an error at `deadline`.
    async fn read(&mut self, deadline: Instant, waiting_for: &str) -> Result<Value, String> {
        loop {
            let message = match timeout_at(deadline, self.ws.next()).await {
                Err(_) => {
                    return Err(format!(
                        "{waiting_for}: no answer in time\n{}",
                        log_tail(self.dir.path())
                    ))
                }
                Ok(None) | Ok(Some(Ok(Message::Close(_)))) => {
                    return Err(format!(
                        "{waiting_for}: DevTools connection closed\n{}",
                        log_tail(self.dir.path())
                    ))
                }
                Ok(Some(Err(e))) => return Err(format!("{waiting_for}: DevTools connection: {e}")),
                Ok(Some(Ok(m))) => m,
            };
            if let Message::Text(text) = message {
                return serde_json::from_str(text.as_str())
                    .map_err(|e| format!("{waiting_for}: DevTools sent bad JSON: {e}"));
            }
        }
    }

    /// Keeps an event for a later `wait_event`; replies to other (abandoned) commands are dropped.
    fn keep_event(&mut self, message: Value) {
        if message.get("method").is_some() {
            if self.events.len() == EVENTS_MAX {
                self.events.pop_front();
            }
            self.events.push_back(message);
        }
    }

    /// Sends one command (to the browser, or to a page's session) and awaits its reply.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        timeout_at(deadline, self.ws.send(Message::text(command.to_string())))
            .await
            .map_err(|_| format!("{method}: send timed out"))?
            .map_err(|e| format!("{method}: send: {e}"))?;
        loop {
            let message = self.read(deadline, method).await?;
            if message.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(error) = message.get("error") {
                    return Err(format!("{method}: {error}"));
                }
                return Ok(message.get("result").cloned().unwrap_or(Value::Null));
            }
            self.keep_event(message);
        }
    }

    /// The first event `method` of `session`, kept or still to come, by `deadline`.
    async fn wait_event(&mut self, session: &str, method: &str, deadline: Instant) -> Result<Value, String> {
        let wanted = |m: &Value| {
            m.get("method").and_then(Value::as_str) == Some(method)
                && m.get("sessionId").and_then(Value::as_str) == Some(session)
        };
        if let Some(i) = self.events.iter().position(wanted) {
            return Ok(self.events.remove(i).unwrap_or_default());
        }
        loop {
            let message = self.read(deadline, method).await?;
            if wanted(&message) {
                return Ok(message);
            }
            self.keep_event(message);
        }
    }

    /// A new tab on about:blank with the Page and Runtime domains enabled.
    pub async fn new_page(&mut self) -> Result<Page, String> {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let target_id = target["targetId"]
            .as_str()
            .ok_or("Target.createTarget: no targetId")?
            .to_owned();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        let session_id = attached["sessionId"]
            .as_str()
            .ok_or("Target.attachToTarget: no sessionId")?
            .to_owned();
        self.call(Some(&session_id), "Page.enable", json!({})).await?;
        self.call(Some(&session_id), "Runtime.enable", json!({})).await?;
        Ok(Page {
            target_id,
            session_id,
        })
    }

    /// Closes the tab.
    pub async fn close_page(&mut self, page: Page) -> Result<(), String> {
        self.call(None, "Target.closeTarget", json!({ "targetId": page.target_id }))
            .await
            .map(drop)
    }

    /// A CTAP2 platform authenticator with resident keys and user verification that always
    /// verifies and simulates the user's touch; returns its id.
    pub async fn add_virtual_authenticator(&mut self, page: &Page) -> Result<String, String> {
        let session = Some(page.session_id.as_str());
        self.call(session, "WebAuthn.enable", json!({ "enableUI": false }))
            .await?;
        let added = self
            .call(
                session,
                "WebAuthn.addVirtualAuthenticator",
                json!({ "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": true,
                    "hasUserVerification": true,
                    "isUserVerified": true,
                    "automaticPresenceSimulation": true,
                } }),
            )
            .await?;
        added["authenticatorId"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "WebAuthn.addVirtualAuthenticator: no authenticatorId".into())
    }

    /// Navigates and waits for the load event.
    pub async fn navigate(&mut self, page: &Page, url: &str) -> Result<(), String> {
        let deadline = Instant::now() + LOAD_TIMEOUT;
        let session = page.session_id.as_str();
        self.events.retain(|m| {
            m.get("sessionId").and_then(Value::as_str) != Some(session)
                || m.get("method").and_then(Value::as_str) != Some("Page.loadEventFired")
        });
        let navigated = self
            .call(Some(session), "Page.navigate", json!({ "url": url }))
            .await?;
        if let Some(error) = navigated.get("errorText").and_then(Value::as_str) {
            return Err(format!("navigate {url}: {error}"));
        }
        self.wait_event(session, "Page.loadEventFired", deadline)
            .await
            .map(drop)
    }

    /// Evaluates `js` in the page, awaiting a returned promise; the value as JSON, or the
    /// exception's text.
    pub async fn eval(&mut self, page: &Page, js: &str) -> Result<Value, String> {
        let evaluated = self
            .call(
                Some(&page.session_id),
                "Runtime.evaluate",
                json!({
                    "expression": js,
                    "awaitPromise": true,
                    "returnByValue": true,
                    "userGesture": true,
                }),
            )
            .await?;
        if let Some(details) = evaluated.get("exceptionDetails") {
            let text = details
                .pointer("/exception/description")
                .or_else(|| details.get("text"))
                .and_then(Value::as_str)
                .unwrap_or("exception without text");
            return Err(text.to_owned());
        }
        Ok(evaluated.pointer("/result/value").cloned().unwrap_or(Value::Null))
    }

    /// Any DevTools command for the page (e.g. `Emulation.setDeviceMetricsOverride`).
    pub async fn command(&mut self, page: &Page, method: &str, params: Value) -> Result<Value, String> {
        self.call(Some(&page.session_id), method, params).await
    }

    /// Sets the page's viewport (CSS pixels; device scale 1, mobile when `mobile`).
    pub async fn set_viewport(
        &mut self,
        page: &Page,
        width: u32,
        height: u32,
        mobile: bool,
    ) -> Result<(), String> {
        self.call(
            Some(&page.session_id),
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await
        .map(drop)
    }

    /// Writes a PNG of the page's viewport to `path`.
    pub async fn screenshot(&mut self, page: &Page, path: &Path) -> Result<(), String> {
        let shot = self
            .call(
                Some(&page.session_id),
                "Page.captureScreenshot",
                json!({ "format": "png" }),
            )
            .await?;
        let png = shot["data"].as_str().ok_or("Page.captureScreenshot: no data")?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(png)
            .map_err(|e| format!("Page.captureScreenshot: {e}"))?;
        std::fs::write(path, png).map_err(|e| format!("write {}: {e}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
