//! Application audio streams against a WebSocket application in the test on 127.0.0.1: the
//! `connected`/`start`/`media` sequence carries a caller's 1 kHz tone (decoded and measured),
//! the application's audio comes out of the player, marks are echoed after their audio,
//! `clear` cuts playback; L16 frames are little-endian; an application that never answers
//! or stops reading never holds up the feeding side.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use switchboard::media::codec::g711::{ulaw_decode, ulaw_encode};
use switchboard::media::level::{rms_dbfs, tone_share};
use switchboard::stream::{
    spawn, AppCommand, AudioFrame, EndReason, Format, Outbound, Player, PlayoutEvent, StartInfo,
    StreamConfig, Track,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

#[path = "support/pki.rs"]
#[allow(dead_code)]
mod pki;

#[path = "support/thread_alloc.rs"]
mod thread_alloc;

#[global_allocator]
static GLOBAL: thread_alloc::Counting = thread_alloc::Counting;

const WAIT: Duration = Duration::from_secs(5);

fn tone(freq: f64, rate: f64, n: usize, from: usize) -> Vec<i16> {
    (from..from + n)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / rate).sin()) as i16)
        .collect()
}

fn info(tracks: Track) -> StartInfo {
    StartInfo {
        call_id: "call-7".into(),
        from: "sip:alice@127.0.0.1".into(),
        to: "sip:bot@127.0.0.1".into(),
        tracks,
        parameters: BTreeMap::from([("lang".to_string(), "en".to_string())]),
    }
}

async fn accept(listener: &TcpListener) -> WebSocketStream<TcpStream> {
    let (tcp, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    tokio_tungstenite::accept_async(tcp).await.unwrap()
}

async fn next_json(ws: &mut WebSocketStream<TcpStream>) -> Value {
    loop {
        let msg = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

async fn send_json(ws: &mut WebSocketStream<TcpStream>, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

fn ulaw_payload(pcm: &[i16]) -> String {
    STANDARD.encode(pcm.iter().map(|&s| ulaw_encode(s)).collect::<Vec<u8>>())
}

/// Receives `n` commands from the application (bounded by WAIT each).
async fn commands(handle: &mut switchboard::stream::StreamHandle, n: usize) -> Vec<AppCommand> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(timeout(WAIT, handle.recv()).await.unwrap().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_stream_carries_tone_plays_reply_echoes_marks_and_clears() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/media", listener.local_addr().unwrap());
    let mut config = StreamConfig::new(&url, Format::Twilio, info(Track::Inbound));
    config.stream_id = "MZtest".into();
    config.send_queue = 100;
    let (mut handle, task) = spawn(config);
    let mut app = accept(&listener).await;

    let connected = next_json(&mut app).await;
    assert_eq!(connected["event"], "connected");
    assert_eq!(connected["protocol"], "Call");
    let start = next_json(&mut app).await;
    assert_eq!(start["event"], "start");
    assert_eq!(start["streamSid"], "MZtest");
    let s = &start["start"];
    assert_eq!(s["streamSid"], "MZtest");
    assert_eq!(s["callSid"], "call-7");
    assert_eq!(s["from"], "sip:alice@127.0.0.1");
    assert_eq!(s["to"], "sip:bot@127.0.0.1");
    assert_eq!(s["tracks"], serde_json::json!(["inbound"]));
    assert_eq!(s["customParameters"]["lang"], "en");
    assert_eq!(
        s["mediaFormat"],
        serde_json::json!({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1})
    );

    // The caller's tone, one second of 20 ms frames; the outbound track handed over too is
    // not part of this stream and must not be sent.
    let other = tone(400.0, 8000.0, 160, 0);
    for i in 0..50 {
        let pcm = tone(1000.0, 8000.0, 160, i * 160);
        assert!(handle.send(Outbound::Audio(AudioFrame::new(
            20 * i as u64,
            Some(&pcm),
            Some(&other)
        ))));
    }
    let mut heard = Vec::new();
    for i in 0..50u64 {
        let m = next_json(&mut app).await;
        assert_eq!(m["event"], "media");
        assert_eq!(m["media"]["track"], "inbound");
        assert_eq!(m["media"]["chunk"], (i + 1).to_string());
        assert_eq!(m["media"]["timestamp"], (20 * i).to_string());
        let bytes = STANDARD
            .decode(m["media"]["payload"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes.len(), 160);
        heard.extend(bytes.iter().map(|&b| ulaw_decode(b)));
    }
    assert!(tone_share(&heard, 1000.0, 8000.0) > 0.9);
    assert!(tone_share(&heard, 1100.0, 8000.0) < 0.05);

    // The application answers with 200 ms of 400 Hz and a mark after it.
    for i in 0..10 {
        let payload = ulaw_payload(&tone(400.0, 8000.0, 160, i * 160));
        send_json(
            &mut app,
            serde_json::json!({"event": "media", "streamSid": "MZtest", "media": {"payload": payload}}),
        )
        .await;
    }
    send_json(
        &mut app,
        serde_json::json!({"event": "mark", "streamSid": "MZtest", "mark": {"name": "reply-end"}}),
    )
    .await;
    let mut player = Player::new(8000 * 30);
    for c in commands(&mut handle, 11).await {
        player.apply(c);
    }
    let mut played = Vec::new();
    let mut frame = [0i16; 160];
    for tick in 1..=10 {
        player.fill(&mut frame);
        played.extend_from_slice(&frame);
        let event = player.next_event();
        if tick < 10 {
            assert_eq!(event, None, "mark due early, at tick {tick}");
        } else {
            assert_eq!(event, Some(PlayoutEvent::Played("reply-end".into())));
            assert!(handle.send(Outbound::Mark("reply-end".into())));
        }
    }
    assert!(tone_share(&played, 400.0, 8000.0) > 0.9);
    let echo = next_json(&mut app).await;
    assert_eq!(echo["event"], "mark");
    assert_eq!(echo["mark"]["name"], "reply-end");
    assert_eq!(echo["streamSid"], "MZtest");

    // Half a second more, a mark, then barge-in.
    for i in 0..25 {
        let payload = ulaw_payload(&tone(400.0, 8000.0, 160, i * 160));
        send_json(
            &mut app,
            serde_json::json!({"event": "media", "media": {"payload": payload}}),
        )
        .await;
    }
    send_json(
        &mut app,
        serde_json::json!({"event": "mark", "mark": {"name": "cut"}}),
    )
    .await;
    send_json(&mut app, serde_json::json!({"event": "clear"})).await;
    let mut cmds = commands(&mut handle, 27).await;
    assert_eq!(cmds.pop(), Some(AppCommand::Clear));
    for c in cmds {
        player.apply(c);
    }
    player.fill(&mut frame);
    assert!(rms_dbfs(&frame) > -20.0);
    player.apply(AppCommand::Clear);
    assert_eq!(
        player.next_event(),
        Some(PlayoutEvent::Cleared("cut".into()))
    );
    assert!(handle.send(Outbound::Mark("cut".into())));
    assert_eq!(player.fill(&mut frame), 0);
    assert!(frame.iter().all(|&s| s == 0));
    let echo = next_json(&mut app).await;
    assert_eq!(echo["mark"]["name"], "cut");

    // Hanging up: `stop`, then the socket closes.
    drop(handle);
    let stop = next_json(&mut app).await;
    assert_eq!(stop["event"], "stop");
    assert_eq!(stop["stop"]["callSid"], "call-7");
    assert_eq!(
        timeout(WAIT, task).await.unwrap().unwrap(),
        EndReason::Hangup
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l16_stream_is_little_endian_and_ends_when_the_application_closes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let config = StreamConfig::new(&url, Format::L16 { rate: 16000 }, info(Track::Both));
    let (mut handle, task) = spawn(config);
    let mut app = accept(&listener).await;

    let start = next_json(&mut app).await;
    assert_eq!(start["event"], "start");
    assert_eq!(start["callId"], "call-7");
    assert_eq!(start["sampleRate"], 16000);
    assert_eq!(start["channels"], 2);
    assert_eq!(start["tracks"], serde_json::json!(["inbound", "outbound"]));
    assert_eq!(start["parameters"]["lang"], "en");

    let inbound = tone(1000.0, 16000.0, 320, 0);
    let outbound = vec![0x0102i16; 320];
    assert!(handle.send(Outbound::Audio(AudioFrame::new(
        0,
        Some(&inbound),
        Some(&outbound)
    ))));
    assert!(handle.send(Outbound::Dtmf('#')));
    let bin = loop {
        match timeout(WAIT, app.next()).await.unwrap().unwrap().unwrap() {
            Message::Binary(b) => break b,
            Message::Text(t) => panic!("expected audio first, got {t}"),
            _ => {}
        }
    };
    assert_eq!(bin.len(), 320 * 4);
    assert_eq!(&bin[2..4], &[0x02, 0x01]);
    let left: Vec<i16> = bin
        .chunks_exact(4)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(left, inbound);
    let dtmf = next_json(&mut app).await;
    assert_eq!(dtmf, serde_json::json!({"event": "dtmf", "digit": "#"}));
    // A tick with the caller's side alone still fills both channels: silence on the right.
    assert!(handle.send(Outbound::Audio(AudioFrame::new(20, Some(&inbound), None))));
    let bin = loop {
        if let Message::Binary(b) = timeout(WAIT, app.next()).await.unwrap().unwrap().unwrap() {
            break b;
        }
    };
    assert_eq!(bin.len(), 320 * 4);
    assert!(bin.chunks_exact(4).all(|c| c[2..] == [0, 0]));

    // 20 ms back from the application, byte order checked by the value that comes out.
    let mut reply = Vec::new();
    for s in [0x1234i16; 320] {
        reply.extend_from_slice(&s.to_le_bytes());
    }
    app.send(Message::binary(reply)).await.unwrap();
    assert_eq!(
        commands(&mut handle, 1).await,
        [AppCommand::Audio(vec![0x1234; 320])]
    );
    // An odd-length frame is refused and counted; the stream goes on.
    app.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    app.send(Message::text(r#"{"event":"clear"}"#))
        .await
        .unwrap();
    assert_eq!(commands(&mut handle, 1).await, [AppCommand::Clear]);
    assert_eq!(
        handle
            .stats()
            .malformed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    app.close(None).await.unwrap();
    assert_eq!(
        timeout(WAIT, task).await.unwrap().unwrap(),
        EndReason::AppClosed
    );
    assert_eq!(timeout(WAIT, handle.recv()).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_end_with_a_reason_within_the_timeout() {
    // Accepted at TCP level, never answered at WebSocket level.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = StreamConfig::new(
        &format!("ws://{}/", listener.local_addr().unwrap()),
        Format::Twilio,
        info(Track::Inbound),
    );
    config.connect_timeout = Duration::from_millis(300);
    let began = Instant::now();
    let (_handle, task) = spawn(config);
    let (_held, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    assert_eq!(
        timeout(WAIT, task).await.unwrap().unwrap(),
        EndReason::Timeout
    );
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(1300), "{took:?}");

    // Nothing listening.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let (_h, task) = spawn(StreamConfig::new(
        &format!("ws://{addr}/"),
        Format::Twilio,
        info(Track::Inbound),
    ));
    assert_eq!(
        timeout(WAIT, task).await.unwrap().unwrap(),
        EndReason::ConnectFailed
    );

    // Not a WebSocket URL.
    let (_h, task) = spawn(StreamConfig::new(
        "http://127.0.0.1:9/",
        Format::Twilio,
        info(Track::Inbound),
    ));
    assert_eq!(
        timeout(WAIT, task).await.unwrap().unwrap(),
        EndReason::ConnectFailed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_that_stops_reading_never_blocks_the_feeder() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(4).unwrap();
    let mut config = StreamConfig::new(
        &format!("ws://{}/", listener.local_addr().unwrap()),
        Format::Twilio,
        info(Track::Inbound),
    );
    config.send_queue = 50;
    let (handle, task) = spawn(config);
    // Handshake done, then nothing is read again.
    let _app = accept(&listener).await;

    let pcm = tone(1000.0, 8000.0, 160, 0);
    let dropped = || {
        handle
            .stats()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let mut last = None;
    // Until the socket's buffers are full, the task still drains the queue.
    for round in 0..200u64 {
        let before = dropped();
        let began = Instant::now();
        for i in 0..1000 {
            handle.send(Outbound::Audio(AudioFrame::new(
                20 * (round * 1000 + i),
                Some(&pcm),
                None,
            )));
        }
        let took = began.elapsed();
        let lost = dropped() - before;
        if lost >= 1000 {
            last = Some(took);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = last.expect("the send queue never stayed full");
    assert!(
        took < Duration::from_millis(5),
        "feeding 1,000 frames took {took:?}"
    );
    assert!(!task.is_finished());

    // Hanging up still ends it, within the close grace, though the application is stuck.
    drop(handle);
    assert_eq!(
        timeout(WAIT, task).await.unwrap().unwrap(),
        EndReason::Hangup
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_uses_the_sip_tls_client_settings() {
    let pki = pki::Pki::new();
    let tls = switchboard::sip::tls::ServerTls::load(&pki.cert(), &pki.key()).unwrap();
    let acceptor: TlsAcceptor = tls.acceptor();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("wss://{}/media", listener.local_addr().unwrap());

    // Trusting the test CA: connected and started over TLS.
    let mut config = StreamConfig::new(&url, Format::Twilio, info(Track::Inbound));
    config.tls = Some(switchboard::sip::tls::client_config(Some(&pki.ca_file()), true).unwrap());
    let (handle, task) = spawn(config);
    let (tcp, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    let tls_stream = timeout(WAIT, acceptor.accept(tcp)).await.unwrap().unwrap();
    let mut app = tokio_tungstenite::accept_async(tls_stream).await.unwrap();
    let first = timeout(WAIT, app.next()).await.unwrap().unwrap().unwrap();
    let connected: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(connected["event"], "connected");
    drop(handle);
    assert_eq!(
        timeout(WAIT, task).await.unwrap().unwrap(),
        EndReason::Hangup
    );

    // The system roots alone do not trust it: the connection fails, and says so.
    let config = StreamConfig::new(&url, Format::Twilio, info(Track::Inbound));
    let (_handle, task) = spawn(config);
    let (tcp, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    assert!(timeout(WAIT, acceptor.accept(tcp)).await.unwrap().is_err());
    assert_eq!(
        timeout(WAIT, task).await.unwrap().unwrap(),
        EndReason::ConnectFailed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_media_side_of_a_tick_does_not_allocate() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let mut config = StreamConfig::new(&url, Format::Twilio, info(Track::Both));
    config.send_queue = 1000;
    let (handle, _task) = spawn(config);
    let mut app = accept(&listener).await;
    let reader = tokio::spawn(async move {
        let mut n = 0u32;
        while let Some(Ok(_)) = app.next().await {
            n += 1;
        }
        n
    });

    let mut player = Player::new(8000 * 30);
    player.apply(AppCommand::Audio(tone(400.0, 8000.0, 8000 * 10, 0)));
    player.apply(AppCommand::Mark("end".into()));
    let caller = tone(1000.0, 8000.0, 160, 0);
    let mut frame = [0i16; 160];
    let mut sent = 0;
    let allocs = thread_alloc::allocations(|| {
        for i in 0..300 {
            player.fill(&mut frame);
            assert_eq!(player.next_event(), None);
            if handle.send(Outbound::Audio(AudioFrame::new(
                i * 20,
                Some(&caller),
                Some(&frame),
            ))) {
                sent += 1;
            }
        }
    });
    assert_eq!(sent, 300);
    assert_eq!(allocs, 0, "allocations on the media side in 300 ticks");
    drop(handle);
    let _ = timeout(WAIT, reader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_or_oversized_message_ends_the_stream_with_error() {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());

    // A frame with a reserved opcode is a protocol error.
    let (_handle, task) = spawn(StreamConfig::new(
        &url,
        Format::Twilio,
        info(Track::Inbound),
    ));
    let mut app = accept(&listener).await;
    app.get_mut().write_all(&[0x8f, 0x00]).await.unwrap();
    assert_eq!(
        timeout(WAIT, task).await.unwrap().unwrap(),
        EndReason::Error
    );

    // A message just inside the size limit is taken; just outside, it ends the stream.
    let (mut handle, task) = spawn(StreamConfig::new(
        &url,
        Format::L16 { rate: 8000 },
        info(Track::Inbound),
    ));
    let mut app = accept(&listener).await;
    app.send(Message::binary(
        vec![0u8; switchboard::stream::client::MAX_APP_MESSAGE],
    ))
    .await
    .unwrap();
    let got = commands(&mut handle, 1).await;
    assert_eq!(
        got,
        [AppCommand::Audio(vec![
            0;
            switchboard::stream::client::MAX_APP_MESSAGE
                / 2
        ])]
    );
    let _ = app
        .send(Message::binary(vec![
            0u8;
            switchboard::stream::client::MAX_APP_MESSAGE
                + 2
        ]))
        .await;
    assert_eq!(
        timeout(WAIT, task).await.unwrap().unwrap(),
        EndReason::Error
    );
}
