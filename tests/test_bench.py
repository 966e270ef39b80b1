"""`imtranslate bench` runs end to end (shrunk images; the figures themselves are not asserted)."""
import json

from imtranslate.cli import main


def test_bench_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--only", "pix2pix-256,multires-256", "--scale", "0.25", "--warmup", "0",
                 "--repeats", "1", "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    names = [r["name"] for r in data["results"]]
    assert names == ["pix2pix-256", "multires-256"]
    for r in data["results"]:
        assert r["infer_s"] > 0 and r["train_s"] > 0 and r["peak_rss_gb"] > 0.3
        assert r["train_gflop"] > r["infer_gflop"] > 0  # a training step costs more than inference
        assert 0 < r["train_pct_peak"] < 1000
    assert data["matmul_peak_gflops"] > 0
    assert "| pix2pix-256 |" in capsys.readouterr().out
