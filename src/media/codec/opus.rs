//! Opus (RFC 7587) through libopus: mono at 48 kHz on the PCM side, whatever the peer sends.
//!
//! - Stereo packets decode to mono: libopus downmixes when the decoder is made for one
//!   channel (RFC 7587 §3.4 lets a receiver do so).
//! - In-band FEC (`useinbandfec=1`): the encoder adds a low-rate copy of each frame to the
//!   next packet, and [`AudioCodec::recover`] decodes a lost frame from that next packet.
//! - DTX (`usedtx=1`): in silence the encoder makes packets of at most two bytes, which
//!   RFC 7587 §3.1.3 says need not be sent; [`AudioCodec::encode`] then returns 0 bytes
//!   ("nothing to send"). A receiver sees the RTP timestamp jump with no gap in sequence
//!   numbers, so silence from DTX is not loss.
//! - `maxplaybackrate` caps the encoder's audio bandwidth (RFC 7587 §6.1).
//!
//! libopus is reached through `audiopus_sys` (raw bindings) because its controls for
//! bandwidth and DTX are variadic C calls that the safe wrappers on crates.io do not
//! expose; the unsafe code is this module's two owning handles.

use std::ffi::c_int;
use std::ptr::NonNull;

use audiopus_sys as ffi;

use super::{AudioCodec, CodecError, CodecKind, OpusParams};

/// PCM rate on our side of the codec: the RTP clock, so timestamps and samples agree.
const RATE: i32 = 48000;
/// Target bitrate: wideband speech at a good quality, still well inside a phone's budget.
pub const BITRATE: i32 = 32000;
/// Loss the encoder expects, which is what makes it spend bits on in-band FEC.
const EXPECTED_LOSS_PERCENT: i32 = 10;
/// Largest packet libopus makes for one frame (RFC 6716 §3.4, R2).
const MAX_FRAME_BYTES: usize = 1275;
/// A payload this short is a DTX packet: there is nothing to send (RFC 7587 §3.1.3).
const DTX_MAX_BYTES: usize = 2;
const NAME: &str = "opus";

fn lib_error(code: c_int) -> String {
    // SAFETY: opus_strerror returns a pointer to a static NUL-terminated string for any code.
    let text = unsafe { std::ffi::CStr::from_ptr(ffi::opus_strerror(code)) };
    text.to_string_lossy().into_owned()
}

/// Owns one libopus encoder.
struct Encoder(NonNull<ffi::OpusEncoder>);

// SAFETY: the encoder state is plain memory owned by this handle and used from one thread
// at a time (`&mut self`).
unsafe impl Send for Encoder {}

impl Encoder {
    fn new(params: &OpusParams) -> Result<Self, String> {
        let mut err: c_int = 0;
        // SAFETY: valid rate, channel count and application; `err` outlives the call.
        let raw =
            unsafe { ffi::opus_encoder_create(RATE, 1, ffi::OPUS_APPLICATION_VOIP, &mut err) };
        let enc = Encoder(NonNull::new(raw).ok_or_else(|| lib_error(err))?);
        enc.ctl(ffi::OPUS_SET_BITRATE_REQUEST, BITRATE)?;
        enc.ctl(ffi::OPUS_SET_SIGNAL_REQUEST, ffi::OPUS_SIGNAL_VOICE)?;
        enc.ctl(
            ffi::OPUS_SET_MAX_BANDWIDTH_REQUEST,
            max_bandwidth(params.max_playback_rate),
        )?;
        enc.ctl(
            ffi::OPUS_SET_INBAND_FEC_REQUEST,
            i32::from(params.use_inband_fec),
        )?;
        let loss = if params.use_inband_fec {
            EXPECTED_LOSS_PERCENT
        } else {
            0
        };
        enc.ctl(ffi::OPUS_SET_PACKET_LOSS_PERC_REQUEST, loss)?;
        enc.ctl(ffi::OPUS_SET_DTX_REQUEST, i32::from(params.use_dtx))?;
        Ok(enc)
    }

    /// One `OPUS_SET_*` request with an integer argument.
    fn ctl(&self, request: i32, value: i32) -> Result<(), String> {
        // SAFETY: every SET request used here takes one opus_int32, as passed.
        let rc = unsafe { ffi::opus_encoder_ctl(self.0.as_ptr(), request, value) };
        if rc == ffi::OPUS_OK {
            Ok(())
        } else {
            Err(lib_error(rc))
        }
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_encoder_create and destroyed only here.
        unsafe { ffi::opus_encoder_destroy(self.0.as_ptr()) }
    }
}

/// Owns one libopus decoder.
struct Decoder(NonNull<ffi::OpusDecoder>);

// SAFETY: as for `Encoder`.
unsafe impl Send for Decoder {}

impl Decoder {
    fn new() -> Result<Self, String> {
        let mut err: c_int = 0;
        // SAFETY: valid rate and channel count; `err` outlives the call.
        let raw = unsafe { ffi::opus_decoder_create(RATE, 1, &mut err) };
        NonNull::new(raw).map(Decoder).ok_or_else(|| lib_error(err))
    }

    /// Decodes `payload` (None: conceal) into `out`, whose length is the frame to produce.
    fn decode(
        &mut self,
        payload: Option<&[u8]>,
        out: &mut [i16],
        fec: bool,
    ) -> Result<usize, c_int> {
        let (data, len) = match payload {
            Some(p) => (
                p.as_ptr(),
                i32::try_from(p.len()).map_err(|_| ffi::OPUS_BAD_ARG)?,
            ),
            None => (std::ptr::null(), 0),
        };
        let frame = c_int::try_from(out.len()).map_err(|_| ffi::OPUS_BAD_ARG)?;
        // SAFETY: `data` is valid for `len` bytes (or null with 0 for concealment) and `out`
        // holds `frame` samples of one channel.
        let n = unsafe {
            ffi::opus_decode(
                self.0.as_ptr(),
                data,
                len,
                out.as_mut_ptr(),
                frame,
                c_int::from(fec),
            )
        };
        usize::try_from(n).map_err(|_| n)
    }

    fn reset(&mut self) {
        // SAFETY: OPUS_RESET_STATE takes no argument.
        unsafe { ffi::opus_decoder_ctl(self.0.as_ptr(), ffi::OPUS_RESET_STATE) };
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_decoder_create and destroyed only here.
        unsafe { ffi::opus_decoder_destroy(self.0.as_ptr()) }
    }
}

/// The encoder bandwidth for a receiver's `maxplaybackrate` (RFC 7587 §6.1 and RFC 6716
/// §2: narrowband 8 kHz, mediumband 12, wideband 16, super-wideband 24, fullband 48).
fn max_bandwidth(max_playback_rate: u32) -> i32 {
    match max_playback_rate {
        0..=8000 => ffi::OPUS_BANDWIDTH_NARROWBAND,
        8001..=12000 => ffi::OPUS_BANDWIDTH_MEDIUMBAND,
        12001..=16000 => ffi::OPUS_BANDWIDTH_WIDEBAND,
        16001..=24000 => ffi::OPUS_BANDWIDTH_SUPERWIDEBAND,
        _ => ffi::OPUS_BANDWIDTH_FULLBAND,
    }
}

/// Whether `samples` at 48 kHz is a frame duration Opus encodes (2.5 to 60 ms).
fn is_opus_frame(samples: usize) -> bool {
    matches!(samples, 120 | 240 | 480 | 960 | 1920 | 2880)
}

/// Opus encoder and decoder for one stream, mono at 48 kHz.
pub struct Opus {
    codec: Result<(Encoder, Decoder), String>,
    params: OpusParams,
}

impl std::fmt::Debug for Opus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opus")
            .field("ready", &self.codec.is_ok())
            .field("params", &self.params)
            .finish()
    }
}

impl Opus {
    /// A codec sending what a receiver with `params` asked for. If libopus refuses to set
    /// up (it only does for invalid arguments or no memory), every call reports
    /// [`CodecError::Unavailable`] instead.
    pub fn new(params: &OpusParams) -> Self {
        Opus {
            codec: Encoder::new(params).and_then(|e| Ok((e, Decoder::new()?))),
            params: *params,
        }
    }

    /// The parameters the encoder was set up with.
    pub fn params(&self) -> &OpusParams {
        &self.params
    }

    fn parts(&mut self) -> Result<&mut (Encoder, Decoder), CodecError> {
        self.codec
            .as_mut()
            .map_err(|reason| CodecError::Unavailable {
                codec: NAME,
                reason: reason.clone(),
            })
    }

    fn decode_with(
        &mut self,
        payload: Option<&[u8]>,
        out: &mut [i16],
        fec: bool,
    ) -> Result<usize, CodecError> {
        let (_, dec) = self.parts()?;
        dec.decode(payload, out, fec).map_err(|code| {
            if code == ffi::OPUS_BUFFER_TOO_SMALL {
                CodecError::BufferTooSmall {
                    needed: out.len() + 1,
                    available: out.len(),
                }
            } else {
                CodecError::InvalidPayload { codec: NAME }
            }
        })
    }
}

impl AudioCodec for Opus {
    fn kind(&self) -> CodecKind {
        CodecKind::Opus
    }

    fn max_encoded_len(&self, samples: usize) -> usize {
        MAX_FRAME_BYTES * samples.div_ceil(960).max(1)
    }

    /// Encodes one frame of 2.5–60 ms; returns 0 when DTX has nothing to send.
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        if !is_opus_frame(pcm.len()) {
            return Err(CodecError::FrameSize {
                codec: NAME,
                samples: pcm.len(),
            });
        }
        let (enc, _) = self.parts()?;
        let frame = pcm.len() as c_int;
        let max = i32::try_from(out.len()).unwrap_or(i32::MAX);
        // SAFETY: `pcm` holds `frame` mono samples; `out` is writable for `max` bytes.
        let n =
            unsafe { ffi::opus_encode(enc.0.as_ptr(), pcm.as_ptr(), frame, out.as_mut_ptr(), max) };
        match usize::try_from(n) {
            Ok(len) if len <= DTX_MAX_BYTES => Ok(0),
            Ok(len) => Ok(len),
            Err(_) if n == ffi::OPUS_BUFFER_TOO_SMALL => Err(CodecError::BufferTooSmall {
                needed: MAX_FRAME_BYTES,
                available: out.len(),
            }),
            Err(_) => Err(CodecError::Unavailable {
                codec: NAME,
                reason: lib_error(n),
            }),
        }
    }

    /// Decodes one packet, mono or stereo, of up to `out.len()` samples.
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if payload.is_empty() {
            // An empty payload would ask libopus to conceal; a packet must say something.
            return Err(CodecError::InvalidPayload { codec: NAME });
        }
        self.decode_with(Some(payload), out, false)
    }

    fn has_own_concealment(&self) -> bool {
        true
    }

    /// libopus's own concealment; `out.len()` must be a multiple of 2.5 ms (120 samples).
    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        self.decode_with(None, out, false)
    }

    /// Decodes the lost frame from the FEC data in the packet after it; libopus conceals
    /// by itself when that packet carries none.
    fn recover(&mut self, next_payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if next_payload.is_empty() {
            return self.conceal(out);
        }
        self.decode_with(Some(next_payload), out, true)
    }

    fn reset(&mut self) {
        if let Ok((_, dec)) = self.codec.as_mut() {
            dec.reset();
        }
    }

    fn reset_decoder(&mut self) {
        self.reset();
    }
}

#[cfg(test)]
mod tests;
