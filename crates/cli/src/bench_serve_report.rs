//! The tables of `minference bench serve`: markdown for the terminal, one CSV row per call.

use crate::bench_serve_client::{median, LoadReport};
use std::fmt::Write as _;

/// One repetition of the long prompt: the same prefill through `run`'s path and the server.
#[derive(Debug, Clone)]
pub struct TtftRep {
    /// Which path ran first in this repetition (they alternate).
    pub first: &'static str,
    /// `run`'s time to first token (the prefill it prints), seconds.
    pub run: f64,
    /// The HTTP client's wall time, request sent → JSON read, seconds.
    pub server_wall: f64,
    /// The server's own `minference.ttft_seconds` (queue + prefill) and `prefill_seconds`.
    pub server_ttft: f64,
    pub server_prefill: f64,
}

/// What one `bench serve` call measured and on what.
pub struct Report {
    pub model: String,
    pub device: String,
    pub attention: String,
    pub prompt_tokens: usize,
    pub reps: Vec<TtftRep>,
    pub short_prompt_tokens: usize,
    pub max_tokens: usize,
    pub load: LoadReport,
}

fn best(v: impl Iterator<Item = f64>) -> f64 {
    v.fold(f64::INFINITY, f64::min)
}

impl Report {
    fn run_best(&self) -> f64 {
        best(self.reps.iter().map(|r| r.run))
    }
    fn server_best(&self) -> f64 {
        best(self.reps.iter().map(|r| r.server_wall))
    }
    fn run_median(&self) -> f64 {
        median(&self.reps.iter().map(|r| r.run).collect::<Vec<_>>())
    }
    fn server_median(&self) -> f64 {
        median(&self.reps.iter().map(|r| r.server_wall).collect::<Vec<_>>())
    }

    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "TTFT of a {}-token prompt (token ids, max_tokens 1): `minference run`'s path (its printed time to \
             first token) vs POST /v1/completions (client wall time); {} | {} | attention {}\n",
            self.prompt_tokens, self.model, self.device, self.attention
        );
        s.push_str(
            "| rep | first | run TTFT (s) | server wall (s) | server ttft_seconds (s) | server prefill_seconds (s) | server / run |\n",
        );
        s.push_str("|---|---|---|---|---|---|---|\n");
        for (i, r) in self.reps.iter().enumerate() {
            let _ = writeln!(
                s,
                "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                i + 1,
                r.first,
                r.run,
                r.server_wall,
                r.server_ttft,
                r.server_prefill,
                r.server_wall / r.run
            );
        }
        let (rb, sb, rm, sm) = (self.run_best(), self.server_best(), self.run_median(), self.server_median());
        let _ = writeln!(s, "| best | | {rb:.3} | {sb:.3} | | | {:.3} |", sb / rb);
        let _ = writeln!(s, "| median | | {rm:.3} | {sm:.3} | | | {:.3} |", sm / rm);
        let l = &self.load;
        let _ = writeln!(
            s,
            "\nShort prompts over HTTP: {} concurrent clients, {}-token prompts (token ids), max_tokens {}, \
             streamed, greedy; TTFT = request sent → first streamed event\n",
            l.clients, self.short_prompt_tokens, self.max_tokens
        );
        s.push_str("| clients | requests | wall (s) | requests/s | generated tokens/s | TTFT p50 / p99 (s) | latency p50 / p99 (s) | non-200 | stream errors |\n");
        s.push_str("|---|---|---|---|---|---|---|---|---|\n");
        let [t50, t99, l50, l99] = l.percentiles();
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.2} | {:.1} | {t50:.3} / {t99:.3} | {l50:.3} / {l99:.3} | {} | {} |",
            l.clients,
            l.requests,
            l.wall,
            l.requests_per_second(),
            l.tokens_per_second(),
            l.non_200,
            l.stream_errors
        );
        s
    }

    pub const CSV_HEADER: &'static str = "model,device,attention,prompt_tokens,reps,run_best_s,run_median_s,\
        server_best_s,server_median_s,ratio_best,ratio_median,clients,requests,short_prompt_tokens,max_tokens,\
        wall_s,requests_per_s,tokens_per_s,ttft_p50_s,ttft_p99_s,latency_p50_s,latency_p99_s,non_200,stream_errors";

    /// The call as one CSV row (fields of [`Report::CSV_HEADER`]).
    pub fn csv_row(&self) -> String {
        let l = &self.load;
        let (rb, sb, rm, sm) = (self.run_best(), self.server_best(), self.run_median(), self.server_median());
        let [t50, t99, l50, l99] = l.percentiles();
        let numbers = [
            rb,
            rm,
            sb,
            sm,
            sb / rb,
            sm / rm,
            l.clients as f64,
            l.requests as f64,
            self.short_prompt_tokens as f64,
            self.max_tokens as f64,
            l.wall,
            l.requests_per_second(),
            l.tokens_per_second(),
            t50,
            t99,
            l50,
            l99,
            l.non_200 as f64,
            l.stream_errors as f64,
        ];
        let mut row = [quoted(&self.model), quoted(&self.device), quoted(&self.attention)].join(",");
        let _ = write!(row, ",{},{}", self.prompt_tokens, self.reps.len());
        for x in numbers {
            let _ = write!(row, ",{x}");
        }
        row
    }
}

/// A CSV field: quoted, inner quotes doubled (device names hold commas).
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_every_row_and_the_csv_every_field() {
        let rep = |first, run, wall| TtftRep { first, run, server_wall: wall, server_ttft: wall, server_prefill: 0.5 };
        let load = LoadReport {
            clients: 8,
            requests: 2,
            wall: 2.0,
            completion_tokens: 32,
            ttft: vec![0.1, 0.2],
            latency: vec![1.0, 1.5],
            ..LoadReport::default()
        };
        let r = Report {
            model: "m".into(),
            device: "CPU (2 threads, AVX-512), 4 slots".into(),
            attention: "dense".into(),
            prompt_tokens: 256,
            reps: vec![rep("run", 1.0, 1.1), rep("server", 2.0, 2.0), rep("run", 1.5, 1.2)],
            short_prompt_tokens: 32,
            max_tokens: 16,
            load,
        };
        let md = r.to_markdown();
        assert!(md.contains("| 3 | run | 1.500 | 1.200 | 1.200 | 0.500 | 0.800 |"), "{md}");
        assert!(md.contains("| best | | 1.000 | 1.100 | | | 1.100 |"), "{md}");
        assert!(md.contains("| median | | 1.500 | 1.200 | | | 0.800 |"), "{md}");
        assert!(md.contains("| 8 | 2 | 2.00 | 1.00 | 16.0 | 0.100 / 0.200 | 1.000 / 1.500 | 0 | 0 |"), "{md}");
        let fields = Report::CSV_HEADER.split(',').count();
        assert_eq!(r.csv_row().matches(',').count() - 2, fields - 1, "{}", r.csv_row());
    }
}
