//! The one place that calls into PocketSphinx: the libraries loaded at run time, and a
//! decoder handle with safe methods over the C API of 0.8+5prealpha (Debian's
//! `libpocketsphinx.so.3` and `libsphinxbase.so.3`).
//!
//! Every `unsafe` of the speech recognition code is in this file. A C call that reports a
//! failure becomes an `Err(String)` naming the call; nothing here panics on what the
//! library returns.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::NonNull;
use std::sync::Arc;

use libloading::Library;

/// `arg_t const *ps_args(void)`
type PsArgs = unsafe extern "C" fn() -> *const c_void;
/// `cmd_ln_t *cmd_ln_parse_r(cmd_ln_t *, arg_t const *, int32 argc, char *argv[], int32 strict)`
type CmdLnParseR =
    unsafe extern "C" fn(*mut c_void, *const c_void, i32, *mut *mut c_char, i32) -> *mut c_void;
/// `int cmd_ln_free_r(cmd_ln_t *)`
type CmdLnFreeR = unsafe extern "C" fn(*mut c_void) -> c_int;
/// `ps_decoder_t *ps_init(cmd_ln_t *config)`
type PsInit = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
/// `int ps_free(ps_decoder_t *)`
type PsFree = unsafe extern "C" fn(*mut c_void) -> c_int;
/// `char *ps_lookup_word(ps_decoder_t *, const char *word)` (caller frees with `ckd_free`)
type PsLookupWord = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_char;
/// `void err_set_logfp(FILE *)`
type ErrSetLogfp = unsafe extern "C" fn(*mut c_void);
/// `void ckd_free(void *)`
type CkdFree = unsafe extern "C" fn(*mut c_void);
/// `int ps_set_jsgf_string(ps_decoder_t *, const char *name, const char *jsgf)`
type PsSetJsgfString = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char) -> c_int;
/// `int ps_set_lm_file(ps_decoder_t *, const char *name, const char *path)`
type PsSetLmFile = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char) -> c_int;
/// `int ps_set_search(ps_decoder_t *, const char *name)`
type PsSetSearch = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
/// `int ps_start_utt(ps_decoder_t *)` and `int ps_end_utt(ps_decoder_t *)`
type PsUtt = unsafe extern "C" fn(*mut c_void) -> c_int;
/// `int ps_process_raw(ps_decoder_t *, int16 const *, size_t, int no_search, int full_utt)`
type PsProcessRaw = unsafe extern "C" fn(*mut c_void, *const i16, usize, c_int, c_int) -> c_int;
/// `char const *ps_get_hyp(ps_decoder_t *, int32 *out_best_score)`
type PsGetHyp = unsafe extern "C" fn(*mut c_void, *mut i32) -> *const c_char;
/// `ps_seg_t *ps_seg_iter(ps_decoder_t *)` and `ps_seg_t *ps_seg_next(ps_seg_t *)`
type PsSegIter = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
/// `char const *ps_seg_word(ps_seg_t *)`
type PsSegWord = unsafe extern "C" fn(*mut c_void) -> *const c_char;
/// `void ps_seg_frames(ps_seg_t *, int *out_sf, int *out_ef)`
type PsSegFrames = unsafe extern "C" fn(*mut c_void, *mut c_int, *mut c_int);
/// `int32 ps_seg_prob(ps_seg_t *, int32 *out_ascr, int32 *out_lscr, int32 *out_lback)`
type PsSegProb = unsafe extern "C" fn(*mut c_void, *mut i32, *mut i32, *mut i32) -> i32;

/// The C functions used, copied out of the loaded libraries.
struct Fns {
    ps_args: PsArgs,
    cmd_ln_parse_r: CmdLnParseR,
    cmd_ln_free_r: CmdLnFreeR,
    ps_init: PsInit,
    ps_free: PsFree,
    ps_lookup_word: PsLookupWord,
    ckd_free: CkdFree,
    ps_set_jsgf_string: PsSetJsgfString,
    ps_set_lm_file: PsSetLmFile,
    ps_set_search: PsSetSearch,
    ps_start_utt: PsUtt,
    ps_end_utt: PsUtt,
    ps_process_raw: PsProcessRaw,
    ps_get_hyp: PsGetHyp,
    ps_seg_iter: PsSegIter,
    ps_seg_next: PsSegIter,
    ps_seg_word: PsSegWord,
    ps_seg_frames: PsSegFrames,
    ps_seg_prob: PsSegProb,
}

/// PocketSphinx and SphinxBase, loaded; the function pointers stay valid while this lives.
pub(super) struct Sphinx {
    fns: Fns,
    // Declared after `fns` so that nothing can outlive the code it points into.
    _pocketsphinx: Library,
    _sphinxbase: Library,
}

impl std::fmt::Debug for Sphinx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sphinx")
    }
}

fn symbol<T: Copy>(lib: &Library, file: &str, name: &str) -> Result<T, String> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.push(0);
    // SAFETY: every `T` this is called with is the `extern "C"` signature of `name` as declared
    // in the 0.8+5prealpha headers (pocketsphinx.h, ps_search.h, cmd_ln.h, ckd_alloc.h); the pointer is only used while `lib` is loaded (see `Sphinx`).
    unsafe { lib.get::<T>(&bytes) }
        .map(|s| *s)
        .map_err(|e| format!("{file} has no {name}: {e}"))
}

impl Sphinx {
    /// Loads the two libraries by file name (searched as `dlopen` does).
    pub(super) fn load(sphinxbase: &str, pocketsphinx: &str) -> Result<Sphinx, String> {
        // SAFETY: loading runs the libraries' initialisers; SphinxBase and PocketSphinx have
        // none beyond the C runtime's, and they are ordinary shared objects from the distribution.
        let sb = unsafe { Library::new(sphinxbase) }.map_err(|e| e.to_string())?;
        // SAFETY: as above.
        let ps = unsafe { Library::new(pocketsphinx) }.map_err(|e| e.to_string())?;
        let fns = Fns {
            ps_args: symbol(&ps, pocketsphinx, "ps_args")?,
            cmd_ln_parse_r: symbol(&sb, sphinxbase, "cmd_ln_parse_r")?,
            cmd_ln_free_r: symbol(&sb, sphinxbase, "cmd_ln_free_r")?,
            ps_init: symbol(&ps, pocketsphinx, "ps_init")?,
            ps_free: symbol(&ps, pocketsphinx, "ps_free")?,
            ps_lookup_word: symbol(&ps, pocketsphinx, "ps_lookup_word")?,
            ckd_free: symbol(&sb, sphinxbase, "ckd_free")?,
            ps_set_jsgf_string: symbol(&ps, pocketsphinx, "ps_set_jsgf_string")?,
            ps_set_lm_file: symbol(&ps, pocketsphinx, "ps_set_lm_file")?,
            ps_set_search: symbol(&ps, pocketsphinx, "ps_set_search")?,
            ps_start_utt: symbol(&ps, pocketsphinx, "ps_start_utt")?,
            ps_end_utt: symbol(&ps, pocketsphinx, "ps_end_utt")?,
            ps_process_raw: symbol(&ps, pocketsphinx, "ps_process_raw")?,
            ps_get_hyp: symbol(&ps, pocketsphinx, "ps_get_hyp")?,
            ps_seg_iter: symbol(&ps, pocketsphinx, "ps_seg_iter")?,
            ps_seg_next: symbol(&ps, pocketsphinx, "ps_seg_next")?,
            ps_seg_word: symbol(&ps, pocketsphinx, "ps_seg_word")?,
            ps_seg_frames: symbol(&ps, pocketsphinx, "ps_seg_frames")?,
            ps_seg_prob: symbol(&ps, pocketsphinx, "ps_seg_prob")?,
        };
        let quiet: ErrSetLogfp = symbol(&sb, sphinxbase, "err_set_logfp")?;
        // SAFETY: `err_set_logfp(NULL)` turns the library's logging off: it sets the
        // library's global flag and pointer, closing no stream (none was opened by it).
        unsafe { quiet(std::ptr::null_mut()) };
        Ok(Sphinx {
            fns,
            _pocketsphinx: ps,
            _sphinxbase: sb,
        })
    }
}

/// What a decoder heard in one utterance.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Hypothesis {
    /// The words, space-separated; empty when nothing was recognised.
    pub text: String,
    /// The words and fillers of the best path, in order.
    pub segments: Vec<Segment>,
}

/// One word (or filler such as `<sil>`, `[NOISE]`) of the best path.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Segment {
    /// The word as the dictionary spells it.
    pub word: String,
    /// First and last frame, inclusive.
    pub frames: (i32, i32),
    /// Acoustic score (log domain, relative to the best senone of each frame).
    pub ascr: i32,
}

fn cstring(what: &str, s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what} contains a NUL byte"))
}

/// One initialised decoder; used by one thread at a time (`&mut self`).
pub(super) struct Decoder {
    lib: Arc<Sphinx>,
    ps: NonNull<c_void>,
    config: NonNull<c_void>,
    // cmd_ln_parse_r's contract asks that argv outlive the configuration.
    _argv: Vec<CString>,
}

// SAFETY: a decoder and its configuration are plain heap objects with no thread affinity; the
// `&mut self` methods ensure one thread uses them at a time, which is all PocketSphinx requires.
unsafe impl Send for Decoder {}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoder")
    }
}

impl Decoder {
    /// Parses `args` (`-hmm`, `-dict`, ...) and builds a decoder with them.
    pub(super) fn new(lib: Arc<Sphinx>, args: &[(&str, &str)]) -> Result<Decoder, String> {
        let mut argv = vec![cstring("argument", "switchboard")?];
        for (name, value) in args {
            argv.push(cstring("argument", name)?);
            argv.push(cstring("argument", value)?);
        }
        let mut ptrs: Vec<*mut c_char> = argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
        let argc = i32::try_from(ptrs.len()).map_err(|_| "too many arguments".to_string())?;
        let f = &lib.fns;
        // SAFETY: `ps_args()` returns the library's static argument table. `ptrs` holds `argc`
        // pointers to NUL-terminated strings kept alive in `argv` for the decoder's life; the
        // parser reads them and does not write through them (the `char *` is historical).
        // argv[0] is a program name, which the parser skips when argc is odd.
        let config = unsafe {
            (f.cmd_ln_parse_r)(
                std::ptr::null_mut(),
                (f.ps_args)(),
                argc,
                ptrs.as_mut_ptr(),
                1,
            )
        };
        let config = NonNull::new(config).ok_or("cmd_ln_parse_r refused the arguments")?;
        // SAFETY: `config` is the valid configuration just parsed; ps_init takes its own
        // reference to it and returns NULL on any failure to load the model.
        let ps = unsafe { (f.ps_init)(config.as_ptr()) };
        let Some(ps) = NonNull::new(ps) else {
            // SAFETY: `config` is ours and no decoder holds it.
            unsafe { (f.cmd_ln_free_r)(config.as_ptr()) };
            return Err("ps_init failed to load the model".into());
        };
        Ok(Decoder {
            lib,
            ps,
            config,
            _argv: argv,
        })
    }

    /// Whether the dictionary has a pronunciation for `word`.
    pub(super) fn has_word(&self, word: &str) -> bool {
        let Ok(w) = CString::new(word) else {
            return false;
        };
        let f = &self.lib.fns;
        // SAFETY: `self.ps` is a live decoder and `w` a NUL-terminated string; the result is
        // NULL or a string the library allocated with its own allocator, freed here with the
        // matching `ckd_free` and not used after.
        unsafe {
            let phones = (f.ps_lookup_word)(self.ps.as_ptr(), w.as_ptr());
            if phones.is_null() {
                false
            } else {
                (f.ckd_free)(phones.cast());
                true
            }
        }
    }

    /// Adds (or replaces) a search named `name` from a JSGF grammar.
    pub(super) fn set_jsgf(&mut self, name: &str, grammar: &str) -> Result<(), String> {
        let (n, g) = (cstring("search name", name)?, cstring("grammar", grammar)?);
        // SAFETY: live decoder, NUL-terminated strings the library copies what it keeps of.
        let rc =
            unsafe { (self.lib.fns.ps_set_jsgf_string)(self.ps.as_ptr(), n.as_ptr(), g.as_ptr()) };
        check(rc, "ps_set_jsgf_string")
    }

    /// Adds a search named `name` from an n-gram language model file.
    pub(super) fn set_lm_file(&mut self, name: &str, path: &str) -> Result<(), String> {
        let (n, p) = (cstring("search name", name)?, cstring("path", path)?);
        // SAFETY: live decoder, NUL-terminated strings the library copies what it keeps of.
        let rc = unsafe { (self.lib.fns.ps_set_lm_file)(self.ps.as_ptr(), n.as_ptr(), p.as_ptr()) };
        check(rc, "ps_set_lm_file")
    }

    /// Makes the search named `name` the one the next utterance is decoded with.
    pub(super) fn use_search(&mut self, name: &str) -> Result<(), String> {
        let n = cstring("search name", name)?;
        // SAFETY: live decoder, NUL-terminated string.
        let rc = unsafe { (self.lib.fns.ps_set_search)(self.ps.as_ptr(), n.as_ptr()) };
        check(rc, "ps_set_search")
    }

    /// Decodes one whole utterance of 16-bit samples at the model's rate.
    pub(super) fn decode(&mut self, samples: &[i16]) -> Result<Hypothesis, String> {
        let f = &self.lib.fns;
        let ps = self.ps.as_ptr();
        // SAFETY: live decoder, used by this thread alone (`&mut self`).
        check(unsafe { (f.ps_start_utt)(ps) }, "ps_start_utt")?;
        // SAFETY: `samples` is a valid slice of `len` i16 that the call only reads.
        let rc = unsafe { (f.ps_process_raw)(ps, samples.as_ptr(), samples.len(), 0, 1) };
        // The utterance is ended even after a failed process call, so the decoder is reusable.
        // SAFETY: live decoder with an utterance started.
        let end = unsafe { (f.ps_end_utt)(ps) };
        check(rc, "ps_process_raw")?;
        check(end, "ps_end_utt")?;
        let mut score = 0i32;
        // SAFETY: live decoder after an utterance; the returned string (or NULL) belongs to the
        // decoder and is valid until its next call, so it is copied at once.
        let text = unsafe {
            let hyp = (f.ps_get_hyp)(ps, &mut score);
            if hyp.is_null() {
                String::new()
            } else {
                CStr::from_ptr(hyp).to_string_lossy().into_owned()
            }
        };
        let mut segments = Vec::new();
        // SAFETY: live decoder after an utterance. The iterator is walked to its end, where
        // `ps_seg_next` frees it and returns NULL (bounded by the 10,000 segments no
        // utterance reaches); the word string is copied before the next step invalidates it.
        unsafe {
            let mut seg = (f.ps_seg_iter)(ps);
            while !seg.is_null() {
                let word = (f.ps_seg_word)(seg);
                let word = if word.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(word).to_string_lossy().into_owned()
                };
                let (mut sf, mut ef) = (0, 0);
                (f.ps_seg_frames)(seg, &mut sf, &mut ef);
                let (mut ascr, mut lscr, mut lback) = (0, 0, 0);
                (f.ps_seg_prob)(seg, &mut ascr, &mut lscr, &mut lback);
                if segments.len() < 10_000 {
                    segments.push(Segment {
                        word,
                        frames: (sf, ef),
                        ascr,
                    });
                }
                seg = (f.ps_seg_next)(seg);
            }
        }
        Ok(Hypothesis { segments, text })
    }
}

fn check(rc: c_int, call: &str) -> Result<(), String> {
    if rc < 0 {
        Err(format!("{call} failed ({rc})"))
    } else {
        Ok(())
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        let f = &self.lib.fns;
        // SAFETY: both objects are ours, released once, the decoder before the configuration
        // it holds a reference to; nothing uses them afterwards.
        unsafe {
            (f.ps_free)(self.ps.as_ptr());
            (f.cmd_ln_free_r)(self.config.as_ptr());
        }
    }
}
