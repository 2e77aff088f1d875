//! A seccomp filter compiler for warden's deny-list, laid out as a binary search over system
//! call numbers.
//!
//! Why not seccompiler's output: it tests the call number against each listed call in turn.
//! When a filter is installed, the kernel runs it over every system call number to find the
//! calls it always allows (its action cache); a linear program makes that cost about 1.6 µs
//! per listed call, about 0.25 ms per sandbox start for our list (measured on the benchmark
//! machine, see bench/RESULTS.md), and the calls that cannot be cached pay the walk at every
//! call. Here every number is decided after a handful of comparisons. The tests check, on
//! every call number and many argument vectors, that this program and seccompiler's decide
//! alike (seccompiler stays as a dev-dependency for that).
//!
//! The program: the architecture check (another architecture is killed), on x86_64 the x32
//! guard, the search tree, whose leaves return an unconditional action or jump to the
//! listed call's argument checks, and those checks.

use std::collections::BTreeMap;

use libc::sock_filter;

pub const RET_ALLOW: u32 = 0x7fff_0000;
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;

/// SECCOMP_RET_ERRNO with `errno`.
pub const fn ret_errno(errno: i32) -> u32 {
    0x0005_0000 | (errno as u32 & 0xffff)
}

/// How much of an argument a condition compares: its low 32 bits, or all 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    Dword,
    Qword,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq(u64),
    Ne(u64),
    /// `(arg & mask) == value`.
    MaskedEq {
        mask: u64,
        value: u64,
    },
}

/// One condition on argument `arg` (0 to 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    pub arg: u8,
    pub width: Width,
    pub cmp: Cmp,
}

/// What one listed system call gets: `action` when any rule holds (a rule holds when all its
/// conditions do), always when there are no rules; otherwise the call is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub action: u32,
    pub rules: Vec<Vec<Cond>>,
}

/// A whole filter: the architecture it accepts and the listed calls by number.
#[derive(Debug, Clone)]
pub struct Spec {
    pub arch: u32,
    pub entries: BTreeMap<u32, Entry>,
    /// On x86_64: the action for call numbers with the x32 bit (0x4000_0000) set.
    pub x32_action: Option<u32>,
}

/// Listed calls per leaf of the search tree: few enough that a leaf's comparisons cost no
/// more than another level of the tree would.
const LEAF: usize = 4;
/// The kernel's limit on a filter's length.
const MAX_LEN: usize = 4096;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;

fn arg_offsets(arg: u8) -> (u32, u32) {
    let base = 16 + 8 * u32::from(arg);
    if cfg!(target_endian = "little") {
        (base, base + 4)
    } else {
        (base + 4, base)
    }
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Next,
    Label(usize),
}

#[derive(Debug, Clone, Copy)]
enum Ins {
    Raw(sock_filter),
    /// A conditional jump on the accumulator against `k`.
    Jump {
        op: u16,
        k: u32,
        jt: Target,
        jf: Target,
    },
    /// An unconditional jump (32-bit offset).
    Ja(usize),
    /// Where a label points; takes no space.
    Label(usize),
}

#[derive(Default)]
struct Asm {
    ins: Vec<Ins>,
    labels: usize,
}

fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn place(&mut self, l: usize) {
        self.ins.push(Ins::Label(l));
    }
    fn load(&mut self, offset: u32) {
        self.ins.push(Ins::Raw(stmt(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            offset,
        )));
    }
    fn and(&mut self, mask: u32) {
        self.ins.push(Ins::Raw(stmt(
            libc::BPF_ALU | libc::BPF_AND | libc::BPF_K,
            mask,
        )));
    }
    fn ret(&mut self, action: u32) {
        self.ins
            .push(Ins::Raw(stmt(libc::BPF_RET | libc::BPF_K, action)));
    }
    fn jeq(&mut self, k: u32, jt: Target, jf: Target) {
        self.ins.push(Ins::Jump {
            op: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            k,
            jt,
            jf,
        });
    }
    /// A conditional jump over a fixed number of instructions.
    fn skip(&mut self, op: u32, k: u32, jt: u8, jf: u8) {
        self.ins.push(Ins::Raw(sock_filter {
            code: (libc::BPF_JMP | op | libc::BPF_K) as u16,
            jt,
            jf,
            k,
        }));
    }
    fn ja(&mut self, l: usize) {
        self.ins.push(Ins::Ja(l));
    }

    /// Resolves labels into offsets.
    fn finish(self) -> Result<Vec<sock_filter>, String> {
        let mut at = vec![usize::MAX; self.labels];
        let mut pos = 0;
        for i in &self.ins {
            match i {
                Ins::Label(l) => at[*l] = pos,
                _ => pos += 1,
            }
        }
        if pos > MAX_LEN {
            return Err(format!(
                "the seccomp filter would be {pos} instructions long; the kernel takes at most {MAX_LEN}"
            ));
        }
        let mut out = Vec::with_capacity(pos);
        for i in self.ins {
            let here = out.len();
            let forward = |l: usize| -> Result<usize, String> {
                let to = at[l];
                if to == usize::MAX || to <= here {
                    return Err("internal error: a seccomp jump goes backwards or nowhere".into());
                }
                Ok(to - here - 1)
            };
            match i {
                Ins::Label(_) => {}
                Ins::Raw(f) => out.push(f),
                Ins::Ja(l) => out.push(stmt(libc::BPF_JMP | libc::BPF_JA, forward(l)? as u32)),
                Ins::Jump { op, k, jt, jf } => {
                    let short = |t: Target| -> Result<u8, String> {
                        match t {
                            Target::Next => Ok(0),
                            Target::Label(l) => u8::try_from(forward(l)?).map_err(|_| {
                                "internal error: a seccomp rule is too long for a conditional jump"
                                    .to_string()
                            }),
                        }
                    };
                    out.push(sock_filter {
                        code: op,
                        jt: short(jt)?,
                        jf: short(jf)?,
                        k,
                    });
                }
            }
        }
        Ok(out)
    }
}

fn u32_of(v: u64, what: &str) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("a 32-bit seccomp condition has a 64-bit {what}: {v:#x}"))
}

/// Emits `cond`; the program falls through when it holds and jumps to `fail` otherwise.
fn condition(asm: &mut Asm, cond: &Cond, fail: usize) -> Result<(), String> {
    if cond.arg > 5 {
        return Err(format!(
            "a seccomp condition names argument {}; there are 6 (0 to 5)",
            cond.arg
        ));
    }
    let (lo, hi) = arg_offsets(cond.arg);
    let fail = Target::Label(fail);
    let next = Target::Next;
    let halves = |v: u64| (v as u32, (v >> 32) as u32);
    match (cond.width, cond.cmp) {
        (Width::Dword, Cmp::Eq(v)) => {
            asm.load(lo);
            asm.jeq(u32_of(v, "value")?, next, fail);
        }
        (Width::Dword, Cmp::Ne(v)) => {
            asm.load(lo);
            asm.jeq(u32_of(v, "value")?, fail, next);
        }
        (Width::Dword, Cmp::MaskedEq { mask, value }) => {
            asm.load(lo);
            asm.and(u32_of(mask, "mask")?);
            asm.jeq(u32_of(value, "value")?, next, fail);
        }
        (Width::Qword, Cmp::Eq(v)) => {
            let (vl, vh) = halves(v);
            asm.load(lo);
            asm.jeq(vl, next, fail);
            asm.load(hi);
            asm.jeq(vh, next, fail);
        }
        (Width::Qword, Cmp::Ne(v)) => {
            // Different when either half differs.
            let (vl, vh) = halves(v);
            let holds = asm.label();
            asm.load(lo);
            asm.jeq(vl, next, Target::Label(holds));
            asm.load(hi);
            asm.jeq(vh, fail, next);
            asm.place(holds);
        }
        (Width::Qword, Cmp::MaskedEq { mask, value }) => {
            let (ml, mh) = halves(mask);
            let (vl, vh) = halves(value);
            asm.load(lo);
            asm.and(ml);
            asm.jeq(vl, next, fail);
            asm.load(hi);
            asm.and(mh);
            asm.jeq(vh, next, fail);
        }
    }
    Ok(())
}

/// The search over `items` (sorted by number); the accumulator holds the call number.
fn tree(asm: &mut Asm, items: &[(u32, &Entry, usize)]) {
    if items.len() <= LEAF {
        for (nr, entry, checks) in items {
            // A miss skips the one instruction that acts on a hit.
            asm.skip(libc::BPF_JEQ, *nr, 0, 1);
            if entry.rules.is_empty() {
                asm.ret(entry.action);
            } else {
                asm.ja(*checks);
            }
        }
        asm.ret(RET_ALLOW);
        return;
    }
    let mid = items.len() / 2;
    let upper = asm.label();
    // The upper half may be far away: the taken branch goes through a long jump.
    asm.skip(libc::BPF_JGE, items[mid].0, 0, 1);
    asm.ja(upper);
    tree(asm, &items[..mid]);
    asm.place(upper);
    tree(asm, &items[mid..]);
}

/// Compiles `spec` into one filter program.
pub fn compile(spec: &Spec) -> Result<Vec<sock_filter>, String> {
    let mut asm = Asm::default();
    asm.load(OFF_ARCH);
    asm.skip(libc::BPF_JEQ, spec.arch, 1, 0);
    asm.ret(RET_KILL_PROCESS);
    asm.load(OFF_NR);
    if let Some(action) = spec.x32_action {
        asm.skip(libc::BPF_JGE, 0x4000_0000, 0, 1);
        asm.ret(action);
    }
    let items: Vec<(u32, &Entry, usize)> = spec
        .entries
        .iter()
        .map(|(nr, e)| (*nr, e, asm.label()))
        .collect();
    tree(&mut asm, &items);
    for (_, entry, checks) in &items {
        if entry.rules.is_empty() {
            continue;
        }
        asm.place(*checks);
        for rule in &entry.rules {
            if rule.is_empty() {
                return Err(
                    "a seccomp rule has no conditions; list the call without rules instead".into(),
                );
            }
            let next_rule = asm.label();
            for cond in rule {
                condition(&mut asm, cond, next_rule)?;
            }
            asm.ret(entry.action);
            asm.place(next_rule);
        }
        asm.ret(RET_ALLOW);
    }
    asm.finish()
}

/// A seccomp BPF interpreter for the instructions [`compile`] emits (and seccompiler's), for
/// the tests: the action, and how many instructions ran.
#[cfg(test)]
pub fn run(prog: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> (u32, usize) {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let mut acc: u32 = 0;
    let mut pc = 0;
    let mut steps = 0;
    loop {
        let i = prog[pc];
        steps += 1;
        let code = u32::from(i.code);
        pc += 1;
        match code {
            c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                let o = i.k as usize;
                acc = u32::from_ne_bytes(data[o..o + 4].try_into().unwrap());
            }
            c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => acc &= i.k,
            c if c == libc::BPF_RET | libc::BPF_K => return (i.k, steps),
            c if c == libc::BPF_JMP | libc::BPF_JA => pc += i.k as usize,
            c if c & 0x07 == libc::BPF_JMP => {
                let taken = match code & 0xf0 {
                    op if op == libc::BPF_JEQ => acc == i.k,
                    op if op == libc::BPF_JGE => acc >= i.k,
                    op if op == libc::BPF_JGT => acc > i.k,
                    op if op == libc::BPF_JSET => acc & i.k != 0,
                    _ => panic!("unexpected jump {code:#x}"),
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            _ => panic!("unexpected instruction {code:#x}"),
        }
    }
}
