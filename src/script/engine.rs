//! The Rhai engine with its limits, compiling a folder of scripts, and hot reload.
//!
//! One [`rhai::Engine`] serves every call: the verbs find their call through the running
//! script's thread-locals (see [`super::api`]), so nothing per call is registered. The
//! progress check also lets a busy script yield its pool thread (see [`super::runner`]). Scripts compile once
//! into `Arc<AST>`s; a call keeps the `Arc` it started with, so a reload never changes a
//! flow under a caller's feet.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rhai::{Engine, EvalAltResult, ParseError, Position, AST};

use super::{api, runner};

/// Limits that keep one script from taking the server with it.
///
/// The defaults are generous for call flows, which mostly wait on the call, and still stop
/// a runaway loop in well under a second of CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptLimits {
    /// Operations over the whole run of one call's script (a `loop {}` ends here).
    pub max_operations: u64,
    /// Nested function calls (deep recursion ends here, before the script's stack does).
    pub max_call_levels: usize,
    /// Nesting of expressions at global level and inside functions.
    pub max_expr_depth: ExprDepth,
    /// Bytes in one string.
    pub max_string_size: usize,
    /// Items in one array.
    pub max_array_size: usize,
    /// Entries in one object map.
    pub max_map_size: usize,
    /// Variables alive at once.
    pub max_variables: usize,
}

/// How deep expressions may nest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExprDepth {
    /// At the script's top level.
    pub global: usize,
    /// Inside a function body.
    pub function: usize,
}

impl Default for ScriptLimits {
    fn default() -> Self {
        ScriptLimits {
            // About 0.1–0.5 s of CPU for a script that never waits; a real flow uses a few
            // hundred operations per menu.
            max_operations: 10_000_000,
            max_call_levels: 32,
            max_expr_depth: ExprDepth {
                global: 64,
                function: 32,
            },
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
            max_variables: 1_000,
        }
    }
}

/// Operations between two looks at the hangup flag: cheap, and a runaway loop still
/// notices a hangup within microseconds.
const HANGUP_CHECK_EVERY: u64 = 256;

/// Builds the engine every call's script runs on.
pub fn build_engine(limits: &ScriptLimits) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth.global, limits.max_expr_depth.function)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_variables(limits.max_variables)
        // Scripts are self-contained files; loading others would dodge `check_dir`.
        .set_max_modules(0);
    engine.on_progress(|ops| {
        if ops % HANGUP_CHECK_EVERY != 0 {
            return None;
        }
        if api::hangup_requested() {
            return Some(api::END_GONE.into());
        }
        if ops % runner::YIELD_EVERY == 0 {
            runner::yield_now();
        }
        None
    });
    // A variable resolver rather than a scope constant, so functions see `session` too
    // (`call` itself is a reserved word in Rhai).
    #[allow(deprecated)] // Rhai marks it volatile, not deprecated
    engine.on_var(|name, _, _| {
        Ok(if name == "session" {
            api::session()
        } else {
            None
        })
    });
    engine.on_print(api::print);
    engine.on_debug(|s, src, pos| api::print(&format!("{}:{pos}: {s}", src.unwrap_or("?"))));
    api::register(&mut engine);
    engine
}

/// An error in a script, located as `file:line[:column]: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ScriptError {
    /// The script's file name (or path, for a single file).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
            (Some(l), None) => write!(f, "{}:{l}: {}", self.file, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl ScriptError {
    /// An error not tied to a place in the file.
    pub fn file(file: impl Into<String>, message: impl Into<String>) -> Self {
        ScriptError {
            file: file.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    fn at(file: &str, pos: Position, message: String) -> Self {
        ScriptError {
            file: file.to_string(),
            line: pos.line(),
            column: pos.position(),
            message,
        }
    }

    /// A syntax error.
    pub fn from_parse(file: &str, e: &ParseError) -> Self {
        ScriptError::at(file, e.position(), e.err_type().to_string())
    }

    /// A runtime error, located at its innermost position: inside the function that failed,
    /// not at the call that led there.
    pub fn from_eval(file: &str, e: &EvalAltResult) -> Self {
        let mut file = file.to_string();
        let mut outer = e.position();
        let mut e = e;
        let mut context = Vec::new();
        loop {
            match e {
                EvalAltResult::ErrorInFunctionCall(name, src, inner, pos) => {
                    context.push(format!("in {name}()"));
                    if !src.is_empty() {
                        file = src.clone();
                    }
                    if !pos.is_none() {
                        outer = *pos;
                    }
                    e = inner;
                }
                EvalAltResult::ErrorInModule(_, inner, pos) => {
                    if !pos.is_none() {
                        outer = *pos;
                    }
                    e = inner;
                }
                _ => break,
            }
        }
        let pos = if e.position().is_none() {
            outer
        } else {
            e.position()
        };
        let mut message = match e {
            EvalAltResult::ErrorRuntime(v, _) => v.to_string(),
            other => message_without_position(other),
        };
        if !context.is_empty() {
            message = format!("{message} ({})", context.join(", "));
        }
        ScriptError::at(&file, pos, message)
    }
}

/// An error's text without the ` (line L, position P)` Rhai appends; the location is
/// reported as `file:line:column` instead.
pub(crate) fn message_without_position(e: &EvalAltResult) -> String {
    let text = e.to_string();
    let pos = e.position();
    if pos.is_none() {
        return text;
    }
    let suffix = format!(" ({pos})");
    text.strip_suffix(&suffix).unwrap_or(&text).to_string()
}

/// Compiles one script; the AST's source is set to `name` so runtime errors name the file.
pub fn compile_source(engine: &Engine, name: &str, source: &str) -> Result<AST, ScriptError> {
    let mut ast = engine
        .compile(source)
        .map_err(|e| ScriptError::from_parse(name, &e))?;
    ast.set_source(name);
    Ok(ast)
}

/// Compiles one script file, named by its file name.
pub fn compile_file(engine: &Engine, path: &Path) -> Result<AST, ScriptError> {
    let name = file_name(path);
    let source = std::fs::read_to_string(path)
        .map_err(|e| ScriptError::file(&name, format!("cannot read: {e}")))?;
    compile_source(engine, &name, &source)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// A script file found on disk.
struct ScriptFile {
    path: PathBuf,
    /// Its modification time, when the file system tells.
    mtime: Option<SystemTime>,
}

/// The `*.rhai` files directly in `dir`, sorted by name.
fn scan(dir: &Path) -> Result<BTreeMap<String, ScriptFile>, ScriptError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ScriptError::file(dir.display().to_string(), format!("cannot list: {e}")))?;
    let mut out = BTreeMap::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "rhai") && path.is_file() {
            let mtime = entry.metadata().and_then(|m| m.modified()).ok();
            out.insert(file_name(&path), ScriptFile { path, mtime });
        }
    }
    Ok(out)
}

/// Compiles every `*.rhai` in `dir`: how many there are, or every error found.
pub fn check_dir(dir: &Path) -> Result<usize, Vec<ScriptError>> {
    let engine = build_engine(&ScriptLimits::default());
    let files = scan(dir).map_err(|e| vec![e])?;
    let errors: Vec<ScriptError> = files
        .values()
        .filter_map(|f| compile_file(&engine, &f.path).err())
        .collect();
    if errors.is_empty() {
        Ok(files.len())
    } else {
        Err(errors)
    }
}

/// One compiled script and the file time it was compiled from.
struct Compiled {
    ast: Arc<AST>,
    mtime: Option<SystemTime>,
}

/// What [`ScriptSet::reload_if_changed`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Files compiled anew (new or changed).
    pub reloaded: Vec<String>,
    /// Files gone from the folder, no longer offered to new calls.
    pub removed: Vec<String>,
    /// Changed files that failed to compile; their previous version stays in use.
    pub errors: Vec<ScriptError>,
}

/// The compiled scripts of a folder, shared by all calls.
pub struct ScriptSet {
    dir: PathBuf,
    engine: Arc<Engine>,
    scripts: RwLock<HashMap<String, Compiled>>,
    /// Files that failed to compile, by the time that failed: not retried (nor reported
    /// again) until they change.
    broken: Mutex<HashMap<String, Option<SystemTime>>>,
}

impl fmt::Debug for ScriptSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptSet")
            .field("dir", &self.dir)
            .field("scripts", &self.names())
            .finish()
    }
}

impl ScriptSet {
    /// Compiles every `*.rhai` in `dir`; any error refuses the whole set.
    pub fn load(dir: impl Into<PathBuf>, engine: Arc<Engine>) -> Result<Self, Vec<ScriptError>> {
        let dir = dir.into();
        let files = scan(&dir).map_err(|e| vec![e])?;
        let mut scripts = HashMap::new();
        let mut errors = Vec::new();
        for (name, f) in files {
            match compile_file(&engine, &f.path) {
                Ok(ast) => {
                    scripts.insert(
                        name,
                        Compiled {
                            ast: Arc::new(ast),
                            mtime: f.mtime,
                        },
                    );
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ScriptSet {
            dir,
            engine,
            scripts: RwLock::new(scripts),
            broken: Mutex::new(HashMap::new()),
        })
    }

    /// The engine the scripts were compiled with and must run on.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// File names of the loaded scripts, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = match self.scripts.read() {
            Ok(s) => s.keys().cloned().collect(),
            Err(p) => p.into_inner().keys().cloned().collect(),
        };
        v.sort();
        v
    }

    /// The script in file `name` (`"ivr.rhai"`).
    pub fn get(&self, name: &str) -> Option<Arc<AST>> {
        let s = match self.scripts.read() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.get(name).map(|c| c.ast.clone())
    }

    /// Recompiles files whose modification time changed, adds new ones and drops removed
    /// ones. Calls in progress keep the AST they hold.
    pub fn reload_if_changed(&self) -> ReloadReport {
        let mut report = ReloadReport::default();
        let files = match scan(&self.dir) {
            Ok(f) => f,
            Err(e) => {
                report.errors.push(e);
                return report;
            }
        };
        let stale: Vec<(&String, &ScriptFile)> = {
            let s = match self.scripts.read() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            report.removed = s
                .keys()
                .filter(|k| !files.contains_key(*k))
                .cloned()
                .collect();
            let broken = match self.broken.lock() {
                Ok(b) => b,
                Err(p) => p.into_inner(),
            };
            files
                .iter()
                .filter(|(name, f)| s.get(*name).is_none_or(|c| c.mtime != f.mtime))
                .filter(|(name, f)| broken.get(*name) != Some(&f.mtime))
                .collect()
        };
        if stale.is_empty() && report.removed.is_empty() {
            return report;
        }
        // Compile outside the lock: calls starting meanwhile still get a script.
        let mut fresh = Vec::new();
        {
            let mut broken = match self.broken.lock() {
                Ok(b) => b,
                Err(p) => p.into_inner(),
            };
            for (name, f) in stale {
                match compile_file(&self.engine, &f.path) {
                    Ok(ast) => {
                        broken.remove(name);
                        let ast = Arc::new(ast);
                        fresh.push((
                            name.clone(),
                            Compiled {
                                ast,
                                mtime: f.mtime,
                            },
                        ));
                    }
                    Err(e) => {
                        broken.insert(name.clone(), f.mtime);
                        report.errors.push(e);
                    }
                }
            }
        }
        let mut s = match self.scripts.write() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        for name in &report.removed {
            s.remove(name);
        }
        for (name, compiled) in fresh {
            tracing::info!(script = %name, "script reloaded");
            report.reloaded.push(name.clone());
            s.insert(name, compiled);
        }
        for e in &report.errors {
            tracing::warn!(error = %e, "script not reloaded; the previous version stays");
        }
        report
    }
}
