//! Names a user typed → what to trace: exact names and globs, "did you mean" for a typo, and
//! "at most N" for a glob that matches too much. One resolver per kind of target (kernel
//! functions, raw tracepoints, tracepoints, symbols of an ELF file), on shared parts.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::runtime::Runtime;
use crate::runtime::btf::{KernelBtf, Prototype};
use crate::runtime::target::{self, ElfInfo, Function, code};
use crate::runtime::tracefs::{self, Format};

pub fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// A glob, or a usage error that quotes it.
pub fn pattern(glob: &str) -> Result<glob::Pattern, Error> {
    glob::Pattern::new(glob).map_err(|e| Error::usage(format!("bad glob `{glob}`: {e}"), None))
}

/// The names matching `glob`, in order.
pub fn matching<'n>(names: &'n [String], glob: &str) -> Result<Vec<&'n String>, Error> {
    let pat = pattern(glob)?;
    Ok(names.iter().filter(|n| pat.matches(n)).collect())
}

/// Names longer than this get no "did you mean": no one mistypes a name that long, and the
/// comparison costs its length times each candidate's.
const MAX_SUGGEST_LEN: usize = 256;

/// Characters of a name counted in 256 buckets (by code point, modulo 256: two characters
/// sharing a bucket only raise the count of common characters, so bounds stay upper bounds).
fn char_counts(s: &str) -> ([u16; 256], usize) {
    let mut counts = [0u16; 256];
    let mut len = 0;
    for c in s.chars() {
        let b = &mut counts[(c as u32 & 0xff) as usize];
        *b = b.saturating_add(1);
        len += 1;
    }
    (counts, len)
}

/// Whether two names can score above `min`, from a bound cheaper than the score (which costs
/// one name's length times the other's). Jaro is (m/|a| + m/|b| + (m-t)/m) / 3 with m the
/// matching characters, at most the characters the two have in common, and Winkler's prefix
/// bonus adds at most 0.4 of what is left: jw <= 0.6 * jaro + 0.4.
fn can_match(want: &([u16; 256], usize), name: &str, min: f64) -> bool {
    let (counts, len) = char_counts(name);
    let common: usize = want.0.iter().zip(&counts).map(|(a, b)| usize::from(*a.min(b))).sum();
    if common == 0 || len == 0 {
        return false;
    }
    let m = common as f64;
    let jaro_bound = (m / want.1 as f64 + m / len as f64 + 1.0) / 3.0;
    0.6 * jaro_bound + 0.4 > min
}

/// Up to `n` names closest to `want` (Jaro-Winkler above `min`), closest first. Bounded: a
/// name past [`MAX_SUGGEST_LEN`] gets none, and a candidate is scored only when its length
/// and characters leave it a chance (a 4x longer name never reaches 0.85).
pub fn similar<'n>(names: impl IntoIterator<Item = &'n str>, want: &str, min: f64, n: usize) -> Vec<&'n str> {
    let counts = char_counts(want);
    if counts.1 == 0 || counts.1 > MAX_SUGGEST_LEN {
        return Vec::new();
    }
    let mut scored: Vec<(f64, &str)> = names
        .into_iter()
        .filter(|s| can_match(&counts, s, min))
        .map(|s| (strsim::jaro_winkler(want, s), s))
        .filter(|(s, _)| *s > min)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(n).map(|(_, s)| s).collect()
}

/// "did you mean `a`, `b`?", or None when nothing is close.
pub fn did_you_mean(close: &[&str]) -> Option<String> {
    let quoted: Vec<String> = close.iter().map(|n| format!("`{n}`")).collect();
    (!quoted.is_empty()).then(|| format!("did you mean {}?", quoted.join(", ")))
}

/// A usage error once more than `limit` targets match.
pub fn at_most(found: usize, limit: usize, plural: &str, hint: &str) -> Result<(), Error> {
    if found <= limit {
        return Ok(());
    }
    Err(Error::usage(format!("{found} {plural} match, but at most {limit} can be traced at once"), Some(hint.into())))
}

fn too_many_functions(found: usize, limit: usize) -> Result<(), Error> {
    at_most(found, limit, "functions", "narrow the glob (see `tracekit list kernel GLOB`)")
}

/// FUNC arguments (names and globs) → the kernel functions to trace, each with its prototype.
pub fn kernel_functions(btf: &KernelBtf, wanted: &[String], limit: usize) -> Result<Vec<(String, Prototype)>, Error> {
    // Every function name is needed only for globs and "did you mean": listed once, on demand.
    let names = OnceCell::new();
    let names = || names.get_or_init(|| btf.func_names());
    let mut out: Vec<(String, Prototype)> = Vec::new();
    for w in wanted {
        let w = w.trim();
        if w.is_empty() {
            return Err(Error::usage(
                "empty kernel function name",
                Some(
                    "give a function or a glob, e.g. do_sys_openat2 or 'tcp_v4_*' (see `tracekit list kernel`)".into(),
                ),
            ));
        }
        if is_glob(w) {
            let hits = matching(names(), w)?;
            if hits.is_empty() {
                return Err(Error::usage(
                    format!("no kernel function matches `{w}`"),
                    Some(format!("see `tracekit list kernel '{w}'`")),
                ));
            }
            too_many_functions(hits.len(), limit)?;
            out.extend(hits.into_iter().filter_map(|n| Some((n.clone(), btf.prototype(n)?))));
        } else {
            let p = btf.prototype(w).ok_or_else(|| {
                let close = similar(names().iter().map(String::as_str), w, 0.9, 3);
                Error::usage(
                    format!("kernel function `{w}` not found"),
                    Some(did_you_mean(&close).unwrap_or_else(|| format!("see `tracekit list kernel '*{w}*'`"))),
                )
            })?;
            out.push((w.to_owned(), p));
        }
    }
    out.dedup_by(|a, b| a.0 == b.0);
    too_many_functions(out.len(), limit)?;
    Ok(out)
}

/// NAME arguments (names and globs) → the raw tracepoints to trace, each with the prototype of
/// its `__bpf_trace_NAME` wrapper.
pub fn raw_tracepoints(btf: &KernelBtf, wanted: &[String], limit: usize) -> Result<Vec<(String, Prototype)>, Error> {
    let all = btf.tracepoint_names();
    let too_many =
        |n| at_most(n, limit, "raw tracepoints", "narrow the glob (see `tracekit list tracepoint '*:GLOB'`)");
    let mut out = Vec::new();
    for w in wanted {
        if w.is_empty() {
            return Err(Error::usage(
                "empty raw tracepoint name",
                Some("give a name or a glob, e.g. sched_switch or 'sched_*' (see `tracekit list tracepoint`)".into()),
            ));
        }
        let names: Vec<String> =
            if is_glob(w) { matching(&all, w)?.into_iter().cloned().collect() } else { vec![w.clone()] };
        if names.is_empty() {
            return Err(Error::usage(
                format!("no raw tracepoint matches `{w}`"),
                Some(format!("see `tracekit list tracepoint '*:{w}'` (raw tracepoints are the part after `:`)")),
            ));
        }
        too_many(names.len())?;
        for n in names {
            let p = btf.tracepoint_prototype(&n).ok_or_else(|| {
                let close = similar(all.iter().map(String::as_str), &n, 0.9, 3);
                Error::usage(
                    format!("raw tracepoint `{n}` not found in kernel BTF"),
                    Some(
                        did_you_mean(&close)
                            .unwrap_or_else(|| "see `tracekit list tracepoint` (the part after `:`)".into()),
                    ),
                )
            })?;
            out.push((n, p));
        }
    }
    too_many(out.len())?;
    Ok(out)
}

/// CATEGORY:NAME arguments (names and globs) → the tracepoints to trace, with their formats.
pub fn tracepoints(tracefs: &Path, wanted: &[String], limit: usize) -> Result<Vec<Format>, Error> {
    let all = tracefs::all_events(tracefs);
    let mut names: Vec<String> = Vec::new();
    for w in wanted {
        if !w.contains(':') {
            return Err(Error::usage(
                format!("bad tracepoint `{w}`: write CATEGORY:NAME"),
                Some("e.g. syscalls:sys_enter_openat; `tracekit list tracepoint` shows them".into()),
            ));
        }
        if let Some((tracefs::FTRACE_CATEGORY, event)) = w.split_once(':')
            && !is_glob(w)
        {
            return Err(Error::usage(
                format!("`{w}` is one of ftrace's own events, not a tracepoint: BPF cannot attach to it"),
                Some(format!(
                    "the `ftrace` category ({event}, …) is ftrace's record format; trace kernel function calls with `tracekit kprobe FUNC`"
                )),
            ));
        }
        if is_glob(w) {
            let hits = matching(&all, w)?;
            if hits.is_empty() {
                return Err(Error::usage(
                    format!("no tracepoint matches `{w}`"),
                    Some(format!("see `tracekit list tracepoint '{w}'`")),
                ));
            }
            names.extend(hits.into_iter().cloned());
        } else if all.iter().any(|n| n == w) {
            names.push(w.clone());
        } else {
            let close = similar(all.iter().map(String::as_str), w, 0.9, 1);
            let hint = did_you_mean(&close).unwrap_or_else(|| "see `tracekit list tracepoint`".into());
            return Err(Error::usage(format!("tracepoint `{w}` not found"), Some(hint)));
        }
    }
    names.sort();
    names.dedup();
    at_most(names.len(), limit, "tracepoints", "narrow the glob")?;
    names
        .iter()
        .map(|n| {
            let (c, e) = n.split_once(':').expect("checked above");
            tracefs::load(tracefs, c, e)
                .map_err(|why| Error::runtime(format!("reading the format of `{n}`: {why}"), None))
        })
        .collect()
}

/// One parsed `BINARY:SYMBOL[+OFFSET]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub binary: String,
    pub symbol: String,
    pub offset: u64,
}

/// `BINARY:SYMBOL[+OFFSET]` → its parts, or a usage error that shows the form.
pub fn parse_spec(s: &str) -> Result<Spec, Error> {
    let bad = |why: &str| {
        Error::usage(
            format!("bad probe `{s}`: {why}"),
            Some("write BINARY:SYMBOL[+OFFSET], e.g. /bin/bash:readline or libc:malloc".to_owned()),
        )
    };
    let (binary, rest) = s.rsplit_once(':').ok_or_else(|| bad("no `:` between binary and symbol"))?;
    let (symbol, offset) = match rest.split_once('+') {
        Some((sym, off)) => {
            let off = off.trim();
            let v = match off.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => off.parse(),
            };
            (sym, v.map_err(|_| bad("the offset must be a number (decimal or 0x hex)"))?)
        }
        None => (rest, 0),
    };
    if binary.is_empty() {
        return Err(bad("empty binary"));
    }
    if symbol.is_empty() {
        return Err(bad("empty symbol"));
    }
    if !symbol.chars().all(|c| c.is_alphanumeric() || "_.$*?[]".contains(c)) {
        return Err(bad("a symbol is letters, digits, `_`, `.`, `$`, or a glob"));
    }
    Ok(Spec { binary: binary.to_owned(), symbol: symbol.to_owned(), offset })
}

/// One function of an ELF file to attach a uprobe to.
#[derive(Debug, Clone)]
pub struct Symbol {
    /// `BINARY:FUNC`, as the user wrote the binary.
    pub label: String,
    pub func: String,
    /// The file that defines the function (a library, for an imported symbol).
    pub path: PathBuf,
    pub file_offset: u64,
}

/// `BINARY:SYMBOL[+OFFSET]` specs (symbols may be globs) → the functions to attach to, looked up
/// in `pid`'s mount namespace when given. An IFUNC is traced at the implementation this CPU
/// uses (or refused), an offset must start an instruction, and two names for the same code are
/// traced once.
pub fn symbols(rt: &Runtime, specs: &[Spec], pid: Option<u32>, limit: usize) -> Result<Vec<Symbol>, Error> {
    for &p in &rt.filter.pids {
        target::user_process(p)?;
    }
    let mut out = Vec::new();
    let mut ifuncs = Vec::new();
    for spec in specs {
        let path = target::resolve_binary(&spec.binary, pid)?;
        let elf = ElfInfo::load(&path)?;
        code::check_machine(&path)?;
        if is_glob(&spec.symbol) {
            let pat = pattern(&spec.symbol)?;
            let hits: Vec<_> = elf.functions.iter().filter(|f| pat.matches(&f.name)).collect();
            if hits.is_empty() {
                return Err(Error::usage(
                    format!("no function in `{}` matches `{}`", path.display(), spec.symbol),
                    Some(format!("see `tracekit list {}`", spec.binary)),
                ));
            }
            at_most(hits.len(), limit, "functions", "narrow the glob (see `tracekit list BINARY GLOB`)")?;
            for f in hits {
                out.push(place(rt, spec, &elf, f, &mut ifuncs)?);
            }
            continue;
        }
        let (def_path, f) = target::find_definition(&elf, &spec.symbol, pid).ok_or_else(|| {
            let hint = if let Some(close) = did_you_mean(&elf.similar(&spec.symbol)) {
                close
            } else if elf.stripped {
                format!(
                    "`{}` is stripped (no .symtab): only exported symbols can be traced; check `nm -D {}`",
                    path.display(),
                    path.display()
                )
            } else {
                format!("see `tracekit list {} '*{}*'`", spec.binary, spec.symbol)
            };
            Error::usage(format!("symbol `{}` not found in `{}`", spec.symbol, path.display()), Some(hint))
        })?;
        if def_path != path {
            rt.say(format_args!(
                "{}: imported by `{}`, defined in `{}`",
                spec.symbol,
                path.display(),
                def_path.display()
            ));
            let lib = ElfInfo::load(&def_path)?;
            out.push(place(rt, spec, &lib, &f, &mut ifuncs)?);
        } else {
            out.push(place(rt, spec, &elf, &f, &mut ifuncs)?);
        }
    }
    let mut seen = std::collections::HashMap::new();
    out.retain(|s| match seen.entry((s.path.clone(), s.file_offset)) {
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(s.func.clone());
            true
        }
        std::collections::hash_map::Entry::Occupied(o) => {
            // An alias (another name for the same code) is worth a note; the same function
            // given twice is not.
            if s.func != *o.get() {
                eprintln!(
                    "tracekit: note: {} runs the same code as `{}`: traced once, its calls show as `{}`",
                    s.label,
                    o.get(),
                    o.get()
                );
            }
            false
        }
    });
    match ifuncs.as_slice() {
        [] => {}
        [one] => eprintln!("tracekit: note: {one}"),
        many => eprintln!(
            "tracekit: note: {} IFUNCs ({}) traced at the implementations this CPU uses (-v lists them)",
            many.len(),
            many.iter().map(|n| n.split_whitespace().next().unwrap_or_default()).take(5).collect::<Vec<_>>().join(", ")
        ),
    }
    at_most(out.len(), limit, "functions", "narrow the glob (see `tracekit list BINARY GLOB`)")?;
    Ok(out)
}

/// Where the probe for `f` of `elf` goes: at the spec's offset into `f`, or into the
/// implementation an IFUNC resolves to; the offset checked against the instructions there.
fn place(rt: &Runtime, spec: &Spec, elf: &ElfInfo, f: &Function, ifuncs: &mut Vec<String>) -> Result<Symbol, Error> {
    let label = format!("{}:{}", spec.binary, f.name);
    let code = if f.ifunc { implementation(elf, f)? } else { f.clone() };
    if f.ifunc {
        let what = if code.name == f.name {
            format!("at file offset {:#x}", code.file_offset)
        } else {
            format!("`{}` at file offset {:#x}", code.name, code.file_offset)
        };
        rt.say(format_args!(
            "{label} is an IFUNC: tracing the implementation this CPU uses, {what} (the resolver is at {:#x})",
            f.file_offset
        ));
        ifuncs.push(format!("{} is an IFUNC: traced at the implementation this CPU uses, {what}", f.name));
    }
    code::check_offset(&elf.path, &code, spec.offset)?;
    Ok(Symbol { label, func: f.name.clone(), path: elf.path.clone(), file_offset: code.file_offset + spec.offset })
}

/// The implementation IFUNC `f` resolves to, named when `elf` has a symbol for it; or a usage
/// error naming the candidates: tracing the resolver would show calls that never happen.
fn implementation(elf: &ElfInfo, f: &Function) -> Result<Function, Error> {
    match code::resolve_ifunc(&elf.path, &f.name) {
        Ok(file_offset) => Ok(elf
            .functions
            .iter()
            .find(|g| g.file_offset == file_offset && !g.ifunc)
            .cloned()
            .unwrap_or(Function { file_offset, size: 0, addr: 0, ifunc: false, ..f.clone() })),
        Err(why) => {
            let candidates: Vec<String> = elf
                .functions
                .iter()
                .filter(|g| !g.ifunc && g.name.starts_with(&format!("__{}_", f.name)))
                .map(|g| format!("`{}`", g.name))
                .collect();
            let hint = if candidates.is_empty() {
                format!(
                    "`{}` has no symbols for its implementations (stripped): trace a caller instead",
                    elf.path.display()
                )
            } else {
                format!("trace one of its implementations by name: {}", candidates.join(", "))
            };
            Err(Error::usage(
                format!(
                    "`{}` in `{}` is an IFUNC (its code only picks an implementation when the library loads), and which implementation this process uses is unknown: {why}",
                    f.name,
                    elf.path.display()
                ),
                Some(hint),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_first() {
        let names = ["do_sys_openat2", "do_sys_open", "vfs_read"];
        assert_eq!(similar(names, "do_sys_opnat2", 0.9, 3)[0], "do_sys_openat2");
        assert_eq!(did_you_mean(&["a", "b"]).unwrap(), "did you mean `a`, `b`?");
        assert_eq!(did_you_mean(&[]), None);
        assert!(at_most(17, 16, "functions", "narrow").unwrap_err().to_string().contains("at most 16"));
        assert!(is_glob("tcp_*") && !is_glob("tcp_v4_connect"));
    }

    #[test]
    fn did_you_mean_is_bounded() {
        // Long mangled names against a long typo: each would cost ~50k comparisons.
        let names: Vec<String> =
            (0..30_000).map(|i| format!("_ZN4core3ptr{i}drop_in_place{}", "x".repeat(150))).collect();
        let t = std::time::Instant::now();
        assert!(similar(names.iter().map(String::as_str), &format!("_ZN{}", "b".repeat(200)), 0.85, 3).is_empty());
        assert!(similar(names.iter().map(String::as_str), &"a".repeat(100_000), 0.9, 3).is_empty());
        assert!(t.elapsed().as_secs_f64() < 2.0, "{:?}", t.elapsed());
        // The bound loses nothing that scores: a close name of a different length still comes.
        let close = format!("_ZN4core3ptr7drop_in_place{}", "x".repeat(140));
        assert_eq!(similar(names.iter().map(String::as_str), &close, 0.85, 1), [names[7].as_str()]);
    }

    #[test]
    fn specs_parse() {
        assert_eq!(
            parse_spec("/bin/bash:readline").unwrap(),
            Spec { binary: "/bin/bash".into(), symbol: "readline".into(), offset: 0 }
        );
        assert_eq!(parse_spec("libc:malloc+0x10").unwrap().offset, 16);
        assert_eq!(parse_spec("libc:malloc+8").unwrap().offset, 8);
        assert_eq!(parse_spec("libc:mem*").unwrap().symbol, "mem*");
        for bad in ["readline", ":readline", "/bin/bash:", "bash:read line", "libc:malloc+zz"] {
            let e = parse_spec(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.hint().unwrap().contains("BINARY:SYMBOL"), "{bad}");
        }
    }

    #[test]
    fn kernel_functions_from_the_running_kernel() {
        let btf = KernelBtf::load(None).unwrap();
        let e = kernel_functions(&btf, &["do_sys_opnat2".into()], 16).unwrap_err();
        assert!(e.hint().unwrap().contains("did you mean `do_sys_openat2`"), "{:?}", e.hint());
        assert_eq!(kernel_functions(&btf, &["*".into()], 16).unwrap_err().exit_code(), 2, "too many");
        let hits = kernel_functions(&btf, &["tcp_v4_conn*".into()], 16).unwrap();
        assert!(hits.iter().any(|(n, _)| n == "tcp_v4_connect"));
    }
}
