//! How the TUI writes figures and draws its frames: short ids, byte
//! counts, rates, times left, bars, block borders and bold text.

use blixard_node::NodeId;
use indicatif::HumanBytes;
use ratatui::{
    style::{Modifier, Style},
    text::Span,
    widgets::{Block, Borders},
};

pub(super) fn short(id: &NodeId) -> String {
    id.to_string()[..8].to_string()
}

pub(super) fn human(bytes: u64) -> String {
    HumanBytes(bytes).to_string()
}

pub(super) fn rate(bytes_per_sec: f64) -> String {
    format!("{}/s", HumanBytes(bytes_per_sec.max(0.0) as u64))
}

pub(super) fn eta(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A text progress bar `width` cells wide.
pub(super) fn bar(fraction: f64, width: usize) -> String {
    let full = ((fraction.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    format!("{}{}", "█".repeat(full), "░".repeat(width - full))
}

pub(super) fn block(title: &str) -> Block<'_> {
    Block::default().borders(Borders::ALL).title(Span::styled(title, Style::default().add_modifier(Modifier::BOLD)))
}

pub(super) fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}
