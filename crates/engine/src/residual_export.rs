//! Handing the residual stream after the last layer (`[tokens, hidden]` f32, before the final
//! norm) out of one prefill, for scoring every position (perplexity); an ordinary prefill returns
//! only the last position's logits. The CPU and GPU engines share this switch and its protocol.

/// Whether the running prefill should keep its final residual stream, and what it kept.
#[derive(Debug, Default)]
pub struct ResidualExport {
    wanted: bool,
    kept: Option<Vec<f32>>,
}

impl ResidualExport {
    /// Asked by the forward after its last layer.
    pub fn wanted(&self) -> bool {
        self.wanted
    }

    /// The forward's final residual stream, when [`wanted`](Self::wanted).
    pub fn keep(&mut self, residual: Vec<f32>) {
        self.kept = Some(residual);
    }

    /// Runs `prefill` on `engine` with the export switched on (and off again, whatever the
    /// prefill returned) and returns the kept stream in place of the logits, with the prefill's
    /// stats; `missing` is the error when the prefill kept nothing. `export` finds the switch in
    /// `engine`, which `prefill` borrows whole.
    pub fn run<E, S, Err>(
        engine: &mut E,
        export: fn(&mut E) -> &mut ResidualExport,
        prefill: impl FnOnce(&mut E) -> Result<(Vec<f32>, S), Err>,
        missing: impl FnOnce() -> Err,
    ) -> Result<(Vec<f32>, S), Err> {
        export(engine).wanted = true;
        let result = prefill(engine);
        export(engine).wanted = false;
        let (_, stats) = result?;
        let residual = export(engine).kept.take().ok_or_else(missing)?;
        Ok((residual, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in engine whose prefill keeps `residual` when asked, or fails.
    struct Fake {
        export: ResidualExport,
        residual: Option<Vec<f32>>,
        fail: bool,
        saw_wanted: Vec<bool>,
    }

    impl Fake {
        fn new(residual: Option<Vec<f32>>, fail: bool) -> Self {
            Fake { export: ResidualExport::default(), residual, fail, saw_wanted: Vec::new() }
        }
        fn prefill(&mut self) -> Result<(Vec<f32>, &'static str), String> {
            self.saw_wanted.push(self.export.wanted());
            if self.fail {
                return Err("prefill failed".into());
            }
            if let (true, Some(r)) = (self.export.wanted(), self.residual.clone()) {
                self.export.keep(r);
            }
            Ok((vec![9.0], "stats"))
        }
        fn run(&mut self) -> Result<(Vec<f32>, &'static str), String> {
            ResidualExport::run(self, |e| &mut e.export, Fake::prefill, || "kept nothing".to_string())
        }
    }

    #[test]
    fn the_kept_stream_replaces_the_logits_and_the_switch_is_off_afterwards() {
        let mut e = Fake::new(Some(vec![1.0, 2.0]), false);
        assert_eq!(e.run(), Ok((vec![1.0, 2.0], "stats")));
        assert!(!e.export.wanted());
        // An ordinary prefill afterwards is not asked to keep anything.
        assert_eq!(e.prefill(), Ok((vec![9.0], "stats")));
        assert_eq!(e.saw_wanted, vec![true, false]);
        assert!(e.export.kept.is_none());
    }

    #[test]
    fn a_failed_prefill_or_nothing_kept_is_an_error_and_switches_off() {
        let mut failing = Fake::new(Some(vec![1.0]), true);
        assert_eq!(failing.run(), Err("prefill failed".to_string()));
        assert!(!failing.export.wanted());
        let mut silent = Fake::new(None, false);
        assert_eq!(silent.run(), Err("kept nothing".to_string()));
        assert!(!silent.export.wanted());
    }
}
