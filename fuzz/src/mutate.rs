//! Byte-level mutations of an input: the usual set of a coverage-less
//! fuzzer (bit flips, byte inserts and deletes, block copies, splices with
//! other corpus entries, dictionary tokens), plus the ones that matter for
//! line protocols (line ends in odd places, very long runs, numbers at
//! their limits).

use crate::rng::Rng;

/// Mutations stacked on one input at most.
pub const MAX_STACKED: usize = 8;
/// Longest run of one byte or token that one mutation inserts: long enough
/// to pass every line limit of the parsers (4096 for SMTP commands).
pub const MAX_RUN: usize = 8 * 1024;

/// Bytes that mean something to one of the parsers.
const INTERESTING_BYTES: &[u8] = b"\0\r\n\t .:;<>@\"\\=-+%/[]()*,?&#\x7f\x80\xc3\xe2\xff";

/// Numbers at the edges of what parsers take (u32, u64, signs, zeros).
const INTERESTING_NUMBERS: &[&[u8]] = &[b"0", b"1", b"-1", b"00000000001", b"255", b"256", b"4294967295", b"4294967296", b"18446744073709551615", b"18446744073709551616", b"99999999999999999999999"];

/// Mutates inputs within a length bound, with a target's dictionary.
pub struct Mutator<'a> {
    pub dict: &'a [&'a [u8]],
    /// Longest input produced.
    pub max_len: usize,
}

impl Mutator<'_> {
    /// Applies 1 to [`MAX_STACKED`] mutations to `data`; `corpus` gives
    /// material for splices.
    pub fn mutate(&self, rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
        let n = 1 + rng.below(MAX_STACKED).min(rng.below(MAX_STACKED));
        for _ in 0..n {
            self.one(rng, data, corpus);
        }
        data.truncate(self.max_len);
    }

    fn token<'b>(&'b self, rng: &mut Rng) -> &'b [u8] {
        if !self.dict.is_empty() && rng.chance(3, 4) {
            *rng.pick::<&[u8]>(self.dict)
        } else {
            *rng.pick::<&[u8]>(INTERESTING_NUMBERS)
        }
    }

    fn one(&self, rng: &mut Rng, d: &mut Vec<u8>, corpus: &[Vec<u8>]) {
        let pos = |rng: &mut Rng, d: &Vec<u8>| rng.below(d.len() + 1);
        match rng.below(16) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = *rng.pick(INTERESTING_BYTES);
            }
            2 => {
                let at = pos(rng, d);
                let k = rng.between(1, 8);
                let bytes: Vec<u8> = (0..k).map(|_| if rng.chance(1, 2) { *rng.pick(INTERESTING_BYTES) } else { rng.byte() }).collect();
                d.splice(at..at, bytes);
            }
            3 if !d.is_empty() => {
                let at = rng.below(d.len());
                let k = rng.between(1, (d.len() - at).min(64));
                d.drain(at..at + k);
            }
            4 if !d.is_empty() => {
                // A copy of a block elsewhere (repeated commands, parts).
                let from = rng.below(d.len());
                let k = rng.between(1, (d.len() - from).min(256));
                let block = d[from..from + k].to_vec();
                let at = pos(rng, d);
                d.splice(at..at, block);
            }
            5 | 6 => {
                let t = self.token(rng).to_vec();
                let at = pos(rng, d);
                d.splice(at..at, t);
            }
            7 if !d.is_empty() => {
                let t = self.token(rng).to_vec();
                let at = rng.below(d.len());
                let end = (at + t.len()).min(d.len());
                d.splice(at..end, t);
            }
            8 if !corpus.is_empty() => {
                // Splice: our head, another entry's tail.
                let other = rng.pick(corpus);
                let at = pos(rng, d);
                let from = rng.below(other.len() + 1);
                d.truncate(at);
                d.extend_from_slice(&other[from..]);
            }
            9 if !corpus.is_empty() => {
                let other = rng.pick(corpus);
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let k = rng.between(1, other.len() - from);
                    let at = pos(rng, d);
                    d.splice(at..at, other[from..from + k].iter().copied());
                }
            }
            10 => {
                // A long run: line limits, length fields, buffers.
                let unit: Vec<u8> = if rng.chance(1, 2) { vec![if rng.chance(1, 2) { b'A' } else { rng.byte() }] } else { self.token(rng).to_vec() };
                let total = rng.between(1, MAX_RUN.min(self.max_len.saturating_sub(d.len()).max(1)));
                let run: Vec<u8> = unit.iter().copied().cycle().take(total.max(unit.len())).collect();
                let at = pos(rng, d);
                d.splice(at..at, run);
            }
            11 => {
                // A number replaced by one at a limit (or put in).
                let n = rng.pick(INTERESTING_NUMBERS).to_vec();
                let len = d.len();
                let off = rng.below(len);
                match (0..len).map(|i| (off + i) % len).find(|&i| d[i].is_ascii_digit()) {
                    Some(start) => {
                        let end = start + d[start..].iter().take_while(|b| b.is_ascii_digit()).count();
                        d.splice(start..end, n);
                    }
                    None => {
                        let at = pos(rng, d);
                        d.splice(at..at, n);
                    }
                }
            }
            12 if !d.is_empty() => {
                let i = rng.below(d.len());
                if d[i].is_ascii_alphabetic() {
                    d[i] ^= 0x20;
                } else {
                    d[i] = d[i].wrapping_add(rng.between(1, 3) as u8);
                }
            }
            13 => d.truncate(pos(rng, d)),
            14 => {
                let le: &[u8] = rng.pick::<&[u8]>(&[&b"\r\n"[..], b"\n", b"\r", b"\r\n\r\n", b"\r\n.\r\n", b"\n.\n", b"\r\r\n"]);
                let at = pos(rng, d);
                d.splice(at..at, le.iter().copied());
            }
            _ => {
                // A byte changed at random, or appended to an empty input.
                if d.is_empty() {
                    d.push(rng.byte());
                } else {
                    let i = rng.below(d.len());
                    d[i] = rng.byte();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_change_inputs_within_the_bound() {
        let m = Mutator { dict: &[b"MAIL FROM:<", b"\r\n.\r\n"], max_len: 100 };
        let mut rng = Rng::new(1);
        let corpus = vec![b"EHLO a\r\n".to_vec(), b"QUIT\r\n".to_vec()];
        let mut changed = 0;
        for _ in 0..2000 {
            let mut d = b"MAIL FROM:<a@b>\r\n".to_vec();
            m.mutate(&mut rng, &mut d, &corpus);
            assert!(d.len() <= 100);
            changed += usize::from(d != b"MAIL FROM:<a@b>\r\n");
        }
        assert!(changed > 1800, "only {changed} of 2000 changed");
    }
}
