from setuptools import find_packages, setup

setup(
    name="fairseq-awd",
    version="0.1.0",
    description="AWD-LSTM (Merity, Keskar & Socher 2017) as fairseq plugins, for language modeling and translation",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fairseq_awd"]),
    python_requires=">=3.10",
    install_requires=[
        # Pinned: a bare "torch" can pull a multi-GB CUDA build. CUDA users install
        # torch==2.13.0 for their CUDA first; pip then keeps it.
        "torch==2.13.0",
        # fairseq 0.12.2 does not import on Python 3.11; this fork does (import name fairseq).
        "fairseq-fixed==0.12.3.1",
        # numpy 1.26 and 2.x: fairseq-fixed's one call into the np.compat that numpy 2
        # removed gets its alias back from fairseq_awd/compat.py.
        "numpy>=1.26",
    ],
    entry_points={"console_scripts": ["fairseq-awd-ablate=fairseq_awd.ablate:main"]},
    extras_require={
        "plot": ["matplotlib"],
        # Moses tokenization for the translation example (fairseq's --tokenizer moses).
        "translation": ["sacremoses"],
        "test": ["pytest", "matplotlib", "sacremoses"],
    },
)
