//! The power button. QEMU's `system_powerdown` (and a real box's button)
//! raises an ACPI power-button event; the kernel's `button` driver turns it
//! into a KEY_POWER key press on an input device, which `evdev` exposes as
//! /dev/input/eventN. With no acpid on the box, init reads those devices
//! itself.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// include/uapi/linux/input-event-codes.h
const EV_KEY: u16 = 0x01;
const KEY_POWER: u16 = 116;
/// struct input_event on 64-bit: struct timeval (16 bytes), type u16,
/// code u16, value s32 (include/uapi/linux/input.h).
const EVENT_SIZE: usize = 24;
/// How long init looks for the event devices to appear after loading
/// evdev (they are created asynchronously).
const DEVICE_WAIT: Duration = Duration::from_secs(3);

/// Decodes one input event: true for a KEY_POWER press.
pub fn is_power_press(ev: &[u8; EVENT_SIZE]) -> bool {
    let ty = u16::from_ne_bytes([ev[16], ev[17]]);
    let code = u16::from_ne_bytes([ev[18], ev[19]]);
    let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
    ty == EV_KEY && code == KEY_POWER && value == 1
}

fn event_devices() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("/dev/input").into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("event"))).collect();
    v.sort();
    v
}

/// Watches every input device for KEY_POWER and calls `pressed` on each
/// press. Returns how many devices are watched.
pub fn watch(pressed: impl Fn() + Send + Clone + 'static) -> usize {
    let start = Instant::now();
    let mut devs = event_devices();
    while devs.is_empty() && start.elapsed() < DEVICE_WAIT {
        std::thread::sleep(Duration::from_millis(100));
        devs = event_devices();
    }
    let mut n = 0;
    for d in devs {
        let Ok(mut f) = File::open(&d) else { continue };
        let cb = pressed.clone();
        let spawned = std::thread::Builder::new().name("power-button".into()).spawn(move || {
            let mut ev = [0u8; EVENT_SIZE];
            // A read of an evdev device returns whole events.
            while f.read_exact(&mut ev).is_ok() {
                if is_power_press(&ev) {
                    cb();
                }
            }
        });
        if spawned.is_ok() {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ty: u16, code: u16, value: i32) -> [u8; EVENT_SIZE] {
        let mut b = [0u8; EVENT_SIZE];
        b[16..18].copy_from_slice(&ty.to_ne_bytes());
        b[18..20].copy_from_slice(&code.to_ne_bytes());
        b[20..24].copy_from_slice(&value.to_ne_bytes());
        b
    }

    #[test]
    fn power_key() {
        assert!(is_power_press(&ev(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_press(&ev(EV_KEY, KEY_POWER, 0)));
        assert!(!is_power_press(&ev(EV_KEY, 30, 1)));
        assert!(!is_power_press(&ev(0, 0, 0)));
    }
}
