//! A tiny voice application for switchboard's call streams (Twilio Media Streams format):
//! a parrot. It keeps what the caller says; on `#` it says it back and marks the end, on
//! `*` it stops talking at once (`clear`), and it hangs up (closes the socket) when the
//! caller has heard it out three times.
//!
//! Run it, and point a dialplan rule at it with the shipped `bot` script:
//!
//! ```text
//! cargo run --example stream_bot -- 127.0.0.1:9000
//!
//! [[dialplan]]
//! exact = "parrot"
//! script = "bot"
//! vars = { stream_url = "ws://127.0.0.1:9000/parrot" }
//! ```

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// Longest speech kept: 30 s of µ-law at 8 kHz, base64 in 20 ms messages.
const MAX_KEPT: usize = 1500;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("parrot listening on ws://{addr}/");
    serve(listener).await;
    Ok(())
}

/// Takes calls until the listener fails, one task each.
pub async fn serve(listener: TcpListener) {
    while let Ok((tcp, _)) = listener.accept().await {
        tokio::spawn(async move {
            if let Err(e) = parrot(tcp).await {
                eprintln!("call ended: {e}");
            }
        });
    }
}

/// One call: the caller's words are kept and said back on `#`.
async fn parrot(tcp: TcpStream) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut ws = tokio_tungstenite::accept_async(tcp).await?;
    let mut kept: Vec<String> = Vec::new();
    let mut sid = String::new();
    let mut repeats = 0;
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg? else { continue };
        let v: Value = serde_json::from_str(text.as_str())?;
        match v["event"].as_str() {
            Some("start") => {
                sid = v["streamSid"].as_str().unwrap_or_default().to_string();
                println!("call {} from {}", v["start"]["callSid"], v["start"]["from"]);
            }
            Some("media") if v["media"]["track"] == "inbound" && kept.len() < MAX_KEPT => {
                if let Some(p) = v["media"]["payload"].as_str() {
                    kept.push(p.to_string());
                }
            }
            Some("dtmf") if v["dtmf"]["digit"] == "#" => {
                // Say it back, then ask to hear when it has been heard.
                for payload in kept.drain(..) {
                    let m =
                        json!({"event": "media", "streamSid": sid, "media": {"payload": payload}});
                    ws.send(Message::text(m.to_string())).await?;
                }
                let m = json!({"event": "mark", "streamSid": sid, "mark": {"name": "said"}});
                ws.send(Message::text(m.to_string())).await?;
            }
            Some("dtmf") if v["dtmf"]["digit"] == "*" => {
                let m = json!({"event": "clear", "streamSid": sid});
                ws.send(Message::text(m.to_string())).await?;
            }
            Some("mark") => {
                repeats += 1;
                if repeats == 3 {
                    ws.close(None).await?;
                }
            }
            Some("stop") => break,
            _ => {}
        }
    }
    Ok(())
}
