//! Progress bars: tiles done / total, rate and ETA, drawn on stderr (hidden when not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

/// An indicatif bar (behind `tessera_core`'s `Progress` in `tessera-engine`).
#[derive(Debug)]
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    pub fn new(unit: &str) -> Bar {
        let bar = ProgressBar::new(0);
        let template = format!("{{bar:40}} {{pos}}/{{len}} {unit} · {{per_sec}} · ETA {{eta}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        Bar { bar }
    }

    pub fn start(&self, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(0);
    }

    pub fn advance(&self, n: u64) {
        self.bar.inc(n);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
