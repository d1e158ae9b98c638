"""Token-length arguments of the benchmark scripts: "128k" = 131072, "1m" = 1048576, or a plain int.

Shared by sdpa_baseline.py and hf_e2e_baseline.py (Python puts the script's folder on sys.path, so
`from lengths import parse_len` works from any working directory)."""


def parse_len(s):
    s = s.strip().lower()
    if s.endswith("k"):
        return int(s[:-1]) * 1024
    if s.endswith("m"):
        return int(s[:-1]) * 1024 * 1024
    return int(s)
