"""The README's main job runs end to end and writes its three pictures."""

from PIL import Image

from genserve.cli import demo


def test_demo_writes_every_image(tmp_path, capsys):
    assert demo.main(["--output", str(tmp_path), "--skip-export"]) == 0
    printed = capsys.readouterr().out
    for label in ("gan: 100 images", "style_transfer: 427x640 photo", "diffusion: 2 x 10 images"):
        assert label in printed
    with Image.open(tmp_path / "gan_grid.png") as gan:
        assert gan.size == (10 * 32 * 2, 10 * 32 * 2)
    with Image.open(tmp_path / "diffusion_grid.png") as diffusion:
        assert diffusion.size == (10 * 32 * 2, 2 * 32 * 2)
    with Image.open(tmp_path / "stylized.png") as stylized:
        assert stylized.mode == "RGB" and stylized.height == 342  # 427x640 -> 342x512
