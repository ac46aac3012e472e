"""Tolerance checks for the vignettes: a number that drifts outside its stated band fails loudly."""


def check(name: str, value: float, low: float, high: float) -> None:
    status = "ok" if low <= value <= high else "OUT OF TOLERANCE"
    print(f"[check] {name}: {value:.4g} (stated band [{low:g}, {high:g}]) {status}")
    if status != "ok":
        raise SystemExit(f"vignette check failed: {name} = {value:.6g} outside [{low:g}, {high:g}]")
