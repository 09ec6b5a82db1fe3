//! The HTTP engine: any server speaking the OpenAI-compatible `POST /v1/audio/speech`
//! (speaches, Kokoro-FastAPI, LocalAI), over plain `http://`.
//!
//! The answer is played as it arrives: a WAV body once its header is in, raw `pcm`
//! (16-bit little-endian mono at 24 kHz, as the OpenAI API defines it) from its first
//! byte. Any other audio a server sends instead (MP3, FLAC, OGG) is gathered and decoded
//! whole by the prompt decoder.

use std::path::Path;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use axum::http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::media::prompt::decode_bytes;
use crate::media::resample::f32_to_i16;

use super::convert::Converter;
use super::{HttpFormat, Job, Out, TtsConfig, TtsError};

/// The rate of the OpenAI API's `pcm` format.
pub const PCM_RATE: u32 = 24_000;

/// Most bytes a WAV header (with any chunks before its data) may take.
const MAX_HEADER: usize = 1 << 20;

/// Most bytes gathered of an answer that must be decoded whole.
const MAX_WHOLE: usize = 64 << 20;

/// Most bytes of an error answer quoted.
const MAX_ERROR_TEXT: usize = 300;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Checks the base URL and gives the endpoint's.
pub(crate) fn parse_base(url: &str) -> Result<Uri, String> {
    let full = format!("{}/v1/audio/speech", url.trim_end_matches('/'));
    crate::webhook::parse_url(&full).map_err(|e| e.to_string())
}

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The HTTP engine's settings and connection pool.
pub(crate) struct HttpEngine {
    client: HttpClient,
    uri: Uri,
    model: String,
    format: HttpFormat,
    timeout: Duration,
    api_key_env: Option<String>,
}

impl HttpEngine {
    pub(crate) fn new(config: &TtsConfig) -> Result<Self, TtsError> {
        let url = config.url.as_deref().unwrap_or_default();
        Ok(Self {
            client: client(),
            uri: parse_base(url).map_err(TtsError::Config)?,
            model: config.model.clone().unwrap_or_default(),
            format: config.format,
            timeout: config.timeout(),
            api_key_env: config.api_key_env.clone(),
        })
    }

    fn url(&self) -> String {
        self.uri.to_string()
    }

    fn timed_out(&self) -> TtsError {
        TtsError::Timeout {
            url: self.url(),
            ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn broken(&self, reason: impl std::fmt::Display) -> TtsError {
        TtsError::Http {
            url: self.url(),
            reason: reason.to_string(),
        }
    }

    /// Asks for `job` and writes its audio to `out` as it arrives, on the shared pool.
    pub(crate) async fn produce(&self, job: &Job, out: &mut Out<'_>) -> Result<(), TtsError> {
        self.produce_with(&self.client, job, out).await
    }

    /// The same on a pool of its own, for a runtime that lives only for this request
    /// (a pooled connection cannot outlive the runtime it was made on).
    pub(crate) async fn produce_alone(&self, job: &Job, out: &mut Out<'_>) -> Result<(), TtsError> {
        self.produce_with(&client(), job, out).await
    }

    async fn produce_with(
        &self,
        client: &HttpClient,
        job: &Job,
        out: &mut Out<'_>,
    ) -> Result<(), TtsError> {
        let body = serde_json::json!({
            "model": self.model,
            "input": job.key.text,
            "voice": job.key.voice,
            "response_format": self.format.as_str(),
            "speed": job.speed,
        });
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, "switchboard");
        if let Some(key) = self
            .api_key_env
            .as_deref()
            .and_then(|name| std::env::var(name).ok())
            .filter(|k| !k.is_empty())
        {
            request = request.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| self.broken(e))?;
        let response = tokio::time::timeout(self.timeout, client.request(request))
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| self.broken(crate::speech::error_chain(&e)))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let mut body = response.into_body();
        if !status.is_success()
            || content_type.starts_with("application/json")
            || content_type.starts_with("text/")
        {
            let mut text = Vec::new();
            while text.len() < MAX_ERROR_TEXT {
                match tokio::time::timeout(self.timeout, body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            text.extend_from_slice(&data);
                        }
                    }
                    _ => break,
                }
            }
            text.truncate(MAX_ERROR_TEXT);
            let text = String::from_utf8_lossy(&text).trim().to_string();
            if !status.is_success() {
                return Err(TtsError::Status {
                    url: self.url(),
                    status: status.as_u16(),
                    body: text,
                });
            }
            return Err(TtsError::BadAudio(format!(
                "answered {content_type}: {text}"
            )));
        }

        let mut decoder = Decoder::new(self.format);
        let mut converter: Option<Converter> = None;
        let (mut native, mut converted) = (Vec::new(), Vec::new());
        let mut heard = 0usize;
        loop {
            let frame = tokio::time::timeout(self.timeout, body.frame())
                .await
                .map_err(|_| self.timed_out())?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| self.broken(crate::speech::error_chain(&e)))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            native.clear();
            decoder.push(&data, &mut native)?;
            heard += native.len();
            if let Some(rate) = decoder.rate() {
                let c = match &mut converter {
                    Some(c) => c,
                    None => converter.insert(Converter::new(rate, job.rate)?),
                };
                converted.clear();
                c.push(&native, &mut converted)?;
                out.put(&converted, job.rate).await?;
            }
            if out.pointless() {
                return Ok(());
            }
        }
        native.clear();
        let rate = decoder.finish(&mut native)?;
        if heard + native.len() == 0 {
            return Err(bad("no audio in the answer"));
        }
        let c = match &mut converter {
            Some(c) => c,
            None => converter.insert(Converter::new(rate, job.rate)?),
        };
        converted.clear();
        c.push(&native, &mut converted)?;
        c.finish(&mut converted)?;
        out.put(&converted, job.rate).await
    }
}

/// A WAV `fmt ` chunk, the parts that matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WavFormat {
    float: bool,
    channels: usize,
    rate: u32,
    bytes: usize,
}

impl WavFormat {
    fn frame_bytes(&self) -> usize {
        self.channels * self.bytes
    }

    /// One frame (all channels) as a mono sample.
    fn sample(&self, frame: &[u8]) -> i16 {
        let mut sum = 0i32;
        for b in frame.chunks_exact(self.bytes) {
            sum += match (self.float, b) {
                (true, [a, b, c, d]) => i32::from(f32_to_i16(f32::from_le_bytes([*a, *b, *c, *d]))),
                (_, [a]) => (i32::from(*a) - 128) << 8,
                (_, [a, b]) => i32::from(i16::from_le_bytes([*a, *b])),
                (_, [a, b, c]) => i32::from_le_bytes([0, *a, *b, *c]) >> 16,
                (_, [a, b, c, d]) => i32::from_le_bytes([*a, *b, *c, *d]) >> 16,
                _ => 0,
            };
        }
        (sum / self.channels.max(1) as i32) as i16
    }
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

fn bad(reason: &str) -> TtsError {
    TtsError::BadAudio(reason.to_string())
}

fn parse_fmt(chunk: &[u8]) -> Result<WavFormat, TtsError> {
    let short = || bad("WAV fmt chunk too short");
    let mut tag = le16(chunk, 0).ok_or_else(short)?;
    let channels = le16(chunk, 2).ok_or_else(short)?;
    let rate = le32(chunk, 4).ok_or_else(short)?;
    let bits = le16(chunk, 14).ok_or_else(short)?;
    if tag == 0xFFFE {
        // WAVE_FORMAT_EXTENSIBLE: the real format is the first two bytes of its GUID.
        tag = le16(chunk, 24).ok_or_else(short)?;
    }
    let float = match (tag, bits) {
        (1, 8 | 16 | 24 | 32) => false,
        (3, 32) => true,
        _ => {
            return Err(TtsError::BadAudio(format!(
                "WAV format {tag} with {bits}-bit samples is not read"
            )))
        }
    };
    if channels == 0 || rate == 0 {
        return Err(bad("WAV header has no channels or no rate"));
    }
    Ok(WavFormat {
        float,
        channels: usize::from(channels),
        rate,
        bytes: usize::from(bits / 8),
    })
}

/// The format, where the data starts and how long it is (none: to the end of the body,
/// as a server that streams writes it), once the header is all in `b`.
fn parse_wav_header(b: &[u8]) -> Result<Option<(WavFormat, usize, Option<u64>)>, TtsError> {
    if b.len() < 12 {
        return Ok(None);
    }
    if &b[8..12] != b"WAVE" {
        return Err(bad("RIFF body is not WAVE"));
    }
    let mut format = None;
    let mut pos = 12usize;
    loop {
        if pos > MAX_HEADER {
            return Err(bad("WAV header too long"));
        }
        let (Some(id), Some(size)) = (b.get(pos..pos + 4), le32(b, pos + 4)) else {
            return Ok(None);
        };
        let start = pos + 8;
        let size = size as usize;
        if id == b"data" {
            let format = format.ok_or_else(|| bad("WAV data before its fmt chunk"))?;
            let len = (size != 0 && size != u32::MAX as usize).then_some(size as u64);
            return Ok(Some((format, start, len)));
        }
        if id == b"fmt " {
            let Some(chunk) = b.get(start..start.saturating_add(size)) else {
                return Ok(None);
            };
            format = Some(parse_fmt(chunk)?);
        }
        pos = start.saturating_add(size).saturating_add(size & 1);
    }
}

enum State {
    /// Fewer than four bytes in: not yet known.
    Sniffing,
    Header,
    Samples {
        format: WavFormat,
        /// Data bytes still to come, when the header said.
        left: Option<u64>,
    },
    Whole,
}

/// Turns an answer's bytes into mono samples at its own rate, as they come.
struct Decoder {
    asked: HttpFormat,
    state: State,
    /// Bytes not yet decoded: a header in the making, part of a frame, or a whole body.
    pending: Vec<u8>,
}

impl Decoder {
    fn new(asked: HttpFormat) -> Self {
        Self {
            asked,
            state: State::Sniffing,
            pending: Vec::new(),
        }
    }

    /// The rate of the samples, once known.
    fn rate(&self) -> Option<u32> {
        match &self.state {
            State::Samples { format, .. } => Some(format.rate),
            _ => None,
        }
    }

    fn push(&mut self, bytes: &[u8], out: &mut Vec<i16>) -> Result<(), TtsError> {
        self.pending.extend_from_slice(bytes);
        if matches!(self.state, State::Sniffing) && self.pending.len() >= 4 {
            self.state = if self.pending.starts_with(b"RIFF") {
                State::Header
            } else if self.asked == HttpFormat::Pcm {
                State::Samples {
                    format: WavFormat {
                        float: false,
                        channels: 1,
                        rate: PCM_RATE,
                        bytes: 2,
                    },
                    left: None,
                }
            } else {
                State::Whole
            };
        }
        if matches!(self.state, State::Header) {
            if let Some((format, start, left)) = parse_wav_header(&self.pending)? {
                self.pending.drain(..start.min(self.pending.len()));
                self.state = State::Samples { format, left };
            }
        }
        match &mut self.state {
            State::Samples { format, left } => {
                let mut usable = self.pending.len();
                if let Some(l) = left {
                    usable = usable.min(usize::try_from(*l).unwrap_or(usize::MAX));
                }
                let whole = usable - usable % format.frame_bytes();
                out.extend(
                    self.pending[..whole]
                        .chunks_exact(format.frame_bytes())
                        .map(|f| format.sample(f)),
                );
                if let Some(l) = left {
                    *l -= whole as u64;
                    if *l == 0 {
                        // Chunks after the data (LIST and the like) are not audio.
                        self.pending.clear();
                        return Ok(());
                    }
                }
                self.pending.drain(..whole);
            }
            State::Whole if self.pending.len() > MAX_WHOLE => {
                return Err(bad("answer too large"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Decodes what is left; returns the rate of all the samples.
    fn finish(&mut self, out: &mut Vec<i16>) -> Result<u32, TtsError> {
        match &self.state {
            State::Samples { format, .. } => Ok(format.rate),
            State::Sniffing | State::Header if self.pending.is_empty() => Err(bad("empty answer")),
            State::Header => Err(bad("WAV answer ends inside its header")),
            State::Sniffing | State::Whole => {
                let bytes = std::mem::take(&mut self.pending);
                let (samples, rate) = decode_bytes(bytes, Path::new("tts answer"))
                    .map_err(|e| TtsError::BadAudio(e.to_string()))?;
                out.extend(samples.into_iter().map(f32_to_i16));
                Ok(rate)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-bit mono WAV with a chunk before its `fmt ` (as some writers put one) and the
    /// given data length (none: unknown, as a streaming server writes it).
    fn wav(rate: u32, samples: &[i16], data_len: Option<u32>) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut file = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut file, spec).unwrap();
        for &s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        let mut b = file.into_inner();
        assert_eq!(&b[36..40], b"data");
        b[40..44].copy_from_slice(&data_len.unwrap_or(u32::MAX).to_le_bytes());
        b.splice(12..12, *b"LIST\x03\0\0\0\x01\x02\x03\0");
        b
    }

    fn decode_in_pieces(
        body: &[u8],
        piece: usize,
        asked: HttpFormat,
    ) -> Result<(Vec<i16>, u32), TtsError> {
        let mut d = Decoder::new(asked);
        let mut out = Vec::new();
        for chunk in body.chunks(piece) {
            d.push(chunk, &mut out)?;
        }
        let rate = d.finish(&mut out)?;
        Ok((out, rate))
    }

    #[test]
    fn wav_decodes_in_any_pieces_and_stops_at_its_data_length() {
        let samples: Vec<i16> = (0..1000).map(|i| (i * 31 % 2000 - 1000) as i16).collect();
        for piece in [1, 3, 7, 64, 5000] {
            let (got, rate) =
                decode_in_pieces(&wav(22050, &samples, None), piece, HttpFormat::Wav).unwrap();
            assert_eq!(
                (got.as_slice(), rate),
                (samples.as_slice(), 22050),
                "piece {piece}"
            );
        }
        let mut body = wav(8000, &samples, Some(200));
        body.extend_from_slice(b"LIST\x04\0\0\0abcd");
        let (got, _) = decode_in_pieces(&body, 50, HttpFormat::Wav).unwrap();
        assert_eq!(got, samples[..100]);
    }

    #[test]
    fn pcm_is_24_khz_s16le_and_keeps_odd_bytes_for_the_next_piece() {
        let samples: Vec<i16> = (0..301).map(|i| i as i16 * 97).collect();
        let body: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let (got, rate) = decode_in_pieces(&body, 5, HttpFormat::Pcm).unwrap();
        assert_eq!((got, rate), (samples, PCM_RATE));
    }

    #[test]
    fn garbage_and_truncation_are_clear_errors() {
        let e = decode_in_pieces(
            b"this is not audio at all, not even close",
            8,
            HttpFormat::Wav,
        )
        .unwrap_err();
        assert!(matches!(e, TtsError::BadAudio(_)), "{e}");
        let e = decode_in_pieces(&wav(8000, &[1; 10], None)[..30], 8, HttpFormat::Wav).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tts answer is not usable audio: WAV answer ends inside its header"
        );
        let e = decode_in_pieces(b"", 8, HttpFormat::Wav).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tts answer is not usable audio: empty answer"
        );
        let mut float64 = wav(8000, &[1; 10], None);
        float64[32..34].copy_from_slice(&3u16.to_le_bytes());
        float64[46..48].copy_from_slice(&64u16.to_le_bytes());
        let e = decode_in_pieces(&float64, 8, HttpFormat::Wav).unwrap_err();
        assert!(e.to_string().contains("64-bit"), "{e}");
    }
}
