//! Unit tests of uprobe: decoding an event by its signature.

use super::*;
use crate::runtime::value::Shown;
use signature::value;

#[test]
fn decodes_a_readline_event() {
    let mut ev =
        types::tk_uprobe_event { flags: F_ENTRY | F_RETURN, ret: 0x2000, latency_ns: 1_500_000, ..Default::default() };
    ev.args[0] = 0x1000;
    for (slot, text) in [(0, &b"$ "[..]), (1, b"echo hi")] {
        for (d, s) in ev.str[slot * 256..].iter_mut().zip(text) {
            *d = *s as _;
        }
        ev.str_len[slot] = text.len() as i16 + 1;
    }
    let sig = signature::builtin("readline").unwrap();
    let (a, r) = signature::slots(&sig);
    let Shown::Str(prompt, false) = value(Kind::Str, ev.args[0], a[0].and_then(|s| slot_str(&ev, s))) else {
        panic!("prompt")
    };
    assert_eq!(prompt, "$ ");
    let Shown::Str(line, false) = value(Kind::Str, ev.ret, r.and_then(|s| slot_str(&ev, s))) else { panic!("line") };
    assert_eq!(line, "echo hi");
    assert!(matches!(value(Kind::Str, 0, None), Shown::Null));
}
