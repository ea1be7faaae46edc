from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
requirements = [line.split("#")[0].strip() for line in (here / "requirements.txt").read_text().splitlines()]

setup(
    name="glm130b",
    version="0.1.0",
    description="GLM-130B in PyTorch: model, blank-infilling data, training, evaluation, generation",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["glm130b", "glm130b.*"]),
    package_data={"glm130b.serving": ["playground.html"]},
    python_requires=">=3.10",
    install_requires=[r for r in requirements if r],
    extras_require={"test": ["pytest>=7", "ruff>=0.4", "openai>=1.0"], "plot": ["matplotlib>=3.5"]},
)
