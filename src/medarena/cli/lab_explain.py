"""`medarena lab explain`: Grad-CAM or probability maps of a registry model on one case."""

from __future__ import annotations

import gzip
from pathlib import Path

import typer

from medarena.cli.common import catalogue_or_exit, console, handle_errors


def register_explain(group: typer.Typer) -> None:
    @group.command("explain")
    @handle_errors
    def explain_cmd(
        ref: str = typer.Argument(..., help="Registry model: NAME (latest) or NAME:VERSION."),
        case: str = typer.Option(..., "--case", "-c", help="Case key (not of a hidden subset)."),
        out: Path = typer.Option(..., "--out", "-o", help="NIfTI file to write (.nii.gz)."),
        dataset: str | None = typer.Option(
            None, "--dataset", "-d", help="Dataset of the case (default: the model's own)."
        ),
        target_layer: str | None = typer.Option(
            None,
            "--target-layer",
            help="Grad-CAM layer (a module name; default: the last layer whose output is a "
            "feature map, e.g. class_layers.relu for DenseNet).",
        ),
        class_index: int | None = typer.Option(
            None, "--class-index", help="Output to explain (default: the highest class)."
        ),
    ) -> None:
        """Explain a lab model's output on one case: Grad-CAM for classifiers and regressors
        (MONAI's GradCAM on the stored PyTorch weights), probability maps for segmentation.

        Writes a uint8 NIfTI of maps in [0, 1] (scl_slope 1/255), one per explained class
        or structure along the 4th axis, on the recipe's preprocessed grid; its affine puts
        it in the case's world coordinates, so any viewer overlays it on the image.
        """
        from medarena.lab.explain import METHOD_TITLES, explain_registry_case, maps_nifti

        if not out.name.endswith((".nii.gz", ".nii")):
            raise typer.BadParameter(
                f"{out.name!r} must end in .nii.gz or .nii", param_hint="--out"
            )
        with (
            catalogue_or_exit() as cat,
            console.status(f"explaining case {case} with {ref}"),
        ):
            exp, affine = explain_registry_case(
                cat,
                ref,
                case,
                dataset=dataset,
                target_layer=target_layer,
                class_index=class_index,
            )
        data = maps_nifti(exp.maps, affine)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data if out.name.endswith(".gz") else gzip.decompress(data))
        console.print(
            f"[green]written[/]: {out} ({METHOD_TITLES[exp.method]}; maps: "
            f"{', '.join(exp.names)}; grid {' x '.join(str(n) for n in exp.maps.shape[1:])})",
            highlight=False,
        )
