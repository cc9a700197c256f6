"""`cohort train localization` (the 5-fold DST study), `cohort train shipped`, `cohort
train decoding` (fit a checkpoint's landmark decoding on held-out phantoms), and the calcium
segmenter's `cohort train segmenter` (its 5-fold study with baselines), `cohort train
pretrain` (MAE on unlabelled series) and `cohort train shipped-segmenter`."""

from __future__ import annotations

import argparse

from cohort.cli.options import add_training_options, storage_options

NAME = "train"
HELP = "train models with k-fold cross-validation on Ray Train"


def add_parser(sub) -> None:
    from cohort.train.study import StudyConfig

    d = StudyConfig()
    train = sub.add_parser("train", help="train models with k-fold cross-validation on Ray Train",
                           description="Train models with k-fold patient-level "
                                       "cross-validation on Ray Train.")
    train_sub = train.add_subparsers(dest="what", metavar="WHAT", required=True)
    shipped = train_sub.add_parser(
        "shipped", help="reproduce the shipped checkpoint (synthetic cohort + study)",
        description="Generate the synthetic cohort of the shipped checkpoint's recipe "
                    "(cohort.train.ship), train the recipe's fold(s) of its 5-fold split, "
                    "test each on its unseen patients, and export the fold model with the "
                    "best validation MAE (float16) to --to (default: the package's "
                    "cohort/model/weights/dst-small-synthetic.pt). SYNTHETIC phantoms only.")
    shipped.add_argument("--out", required=True, metavar="URL",
                         help="where the cohort and the study are written")
    shipped.add_argument("--to", metavar="PATH", help="checkpoint file to write")
    shipped.add_argument("--scale", choices=("cpu", "gpu"), default="cpu",
                         help="cpu: the shipped recipe, about 1.2 h on 2 cores (one fold of "
                              "200 phantoms at 2 mm pixels); gpu: the same scaled up (1000 "
                              "phantoms, 1 mm pixels, all 5 folds, one GPU per fold)")
    shipped.set_defaults(handler=handle_shipped)
    dec = train_sub.add_parser(
        "decoding", help="fit a checkpoint's landmark decoding on a held-out synthetic cohort",
        description="Generate the shipped recipe's calibration cohort (SYNTHETIC phantoms of "
                    "another seed, never trained on) under --out, and fit the checkpoint's "
                    "landmark decoding on it: the mirrored pass, location offsets per band "
                    "of slice spacing, the median rule, kept only where they beat the "
                    "paper's decoding out of sample; the QC confidence threshold is refitted "
                    "on the slices it reports. Written into the checkpoint's metadata; the "
                    "weights stay bit-identical. `cohort train shipped` does this itself.")
    dec.add_argument("checkpoint", metavar="PATH", help="the checkpoint file to calibrate")
    dec.add_argument("--out", required=True, metavar="URL",
                     help="where the calibration cohort and its model inputs are written")
    dec.add_argument("--patients", type=int, metavar="N",
                     help="phantoms in the calibration cohort (default: the recipe's, 80)")
    dec.add_argument("--seed", type=int,
                     help="its seed (default: the recipe's, 8); never one the model was "
                          "trained or chosen on")
    dec.set_defaults(handler=handle_decoding)
    loc = train_sub.add_parser(
        "localization", help="the DST landmark study (the paper's Table II, ablations: IV)",
        description="The 5-fold patient-level landmark-localization study: prepares model "
                    "inputs once, trains each fold on Ray Train (checkpoints every epoch, "
                    "resume after a crash, early stopping on validation), predicts each "
                    "fold's test split once with its best model, and writes predictions, "
                    "per-fold metrics, Table II and calibration under OUT/tables.")
    loc.add_argument("--data", required=True, metavar="URL",
                     help="a synthetic cohort (from `cohort synth heads`) or the --out folder "
                          "of `cohort index`")
    loc.add_argument("--labels", metavar="URL",
                     help="landmark table (Parquet/CSV: series_uid, patient_key, six "
                          "<landmark>_slice columns); a synthetic cohort brings its own")
    loc.add_argument("--out", required=True, metavar="URL", help="where the study is written")
    loc.add_argument("--model", default=d.train.model,
                     help="DST configuration: small, paper, tiny (default %(default)s)")
    loc.add_argument("--ablations", nargs="*", default=[], metavar="NAME",
                     help="also run: no_attention right_padding blocks_0 blocks_1 blocks_8")
    loc.add_argument("--warmup-epochs", type=int, default=d.train.warmup_epochs,
                     help="linear warm-up epochs before cosine decay (default %(default)s)")
    loc.add_argument("--input-size", type=int, default=d.model_input.size,
                     help="model pixels per side in-plane (default %(default)s; stored in the "
                          "models)")
    loc.add_argument("--crop", choices=("head", "skull_base"), default=d.model_input.crop,
                     help="centre of the in-plane field of view: the whole head, or the skull "
                          "base where the landmarks lie (default %(default)s; the shipped "
                          "recipe: skull_base)")
    loc.add_argument("--fov-mm", type=float, default=d.model_input.fov_mm,
                     help="in-plane field of view in mm (default %(default)g; the shipped "
                          "recipe: 128 with --crop skull_base)")
    loc.add_argument("--optimizer", choices=("sgd", "adamw"), default=d.train.optimizer,
                     help="sgd (the paper's) or adamw (the shipped recipe's; default "
                          "%(default)s)")
    loc.add_argument("--weight-decay", type=float, default=d.train.weight_decay,
                     help="(default %(default)g; the shipped recipe: 0.05 with adamw)")
    loc.add_argument("--target-sigma-mm", type=float, default=d.train.target_sigma_mm,
                     help="0: cross-entropy on the true slice (the paper); > 0: Gaussian "
                          "targets of this width in mm (the shipped recipe: 1.5)")
    add_training_options(loc, d.train, d.splits, threads=d.cpus_per_worker,
                         workers=d.workers)
    loc.set_defaults(handler=handle_localization)
    add_segmenter_parsers(train_sub)


def add_segmenter_parsers(train_sub) -> None:
    from cohort.train.seg_study import SIZES, VARIANTS, SegStudyConfig

    d = SegStudyConfig()
    seg = train_sub.add_parser(
        "segmenter", help="the calcium segmenter study (ViT with MAE, baselines side by side)",
        description="The 5-fold patient-level calcium-segmentation study: cuts every "
                    "labelled series to its arterial crop once, pre-trains the ViT as a "
                    "masked autoencoder on each fold's training crops, fine-tunes it, "
                    "calibrates it on the validation split (temperature, threshold, ECE "
                    "before/after), predicts the test split once, and scores the variants "
                    "side by side (Dice, volume r and Bland-Altman, risk-group kappa, by "
                    "slice thickness) under OUT/tables.")
    seg.add_argument("--data", required=True, metavar="URL",
                     help="a synthetic cohort (from `cohort synth heads`) or the --out folder "
                          "of `cohort index`")
    seg.add_argument("--labels", metavar="URL", help="landmark table (as for `cohort train "
                     "localization`); a synthetic cohort brings its own")
    seg.add_argument("--masks", metavar="URL", help="folder of <SeriesInstanceUID>.nii.gz "
                     "calcium masks; a synthetic cohort brings its own")
    seg.add_argument("--out", required=True, metavar="URL", help="where the study is written")
    seg.add_argument("--variants", nargs="+", default=["vit", "threshold_130hu"],
                     choices=list(VARIANTS), metavar="NAME",
                     help=f"what to train and score side by side: {', '.join(VARIANTS)} "
                          "(default: vit threshold_130hu)")
    seg.add_argument("--only-folds", type=int, nargs="+", default=[], metavar="F",
                     help="train and test these folds only (default: all)")
    seg.add_argument("--size", default=d.size, choices=list(SIZES),
                     help="network size of every variant: tiny (about 12 times cheaper per "
                          "step than default) makes the 5-fold grid of ablations affordable "
                          "on CPU; default is the shipped segmenter's size (default "
                          "%(default)s)")
    seg.add_argument("--pretrain-epochs", type=int, default=d.pretrain.epochs,
                     help="MAE epochs per fold (default %(default)s)")
    seg.add_argument("--windows-per-crop", type=int, default=d.windows_per_crop,
                     help="training windows per crop and epoch (default %(default)s)")
    seg.add_argument("--init-weights", metavar="CKPT",
                     help="fine-tune the ViT variants from this checkpoint instead of "
                          "pre-training ({fold} is replaced by the fold): a segmenter of the "
                          "same configuration continues whole (a second stage, e.g. from "
                          "the shipped one), a pre-trained MAE gives its encoder")
    seg.add_argument("--hard-positive-p", type=float, default=d.train.hard_positive_p,
                     metavar="SHARE",
                     help="of the training windows centred on calcium, the share centred on "
                          "calcium touching bone (default %(default)s)")
    seg.add_argument("--fn-weight", type=float, default=d.train.fn_weight, metavar="W",
                     help="weight of missed calcium in the overlap loss: 0.5 is soft Dice, "
                          "more a Tversky index that favours recall (default %(default)s)")
    add_training_options(seg, d.train, d.splits, threads=d.cpus_per_worker,
                         workers=d.workers)
    seg.set_defaults(handler=handle_segmenter)
    pre = train_sub.add_parser(
        "pretrain", help="MAE pre-training of the segmenter's ViT on unlabelled series",
        description="Masked-autoencoder pre-training of the calcium segmenter's ViT on the "
                    "arterial crops of unlabelled series (landmarks from --labels, e.g. a "
                    "`cohort run`'s, or a synthetic cohort's own); writes "
                    "OUT/models/pretrained-<model>.pt.")
    pre.add_argument("--data", required=True, metavar="URL",
                     help="a synthetic cohort or the --out folder of `cohort index`")
    pre.add_argument("--labels", metavar="URL", help="landmark table for the crops")
    pre.add_argument("--out", required=True, metavar="URL")
    pre.add_argument("--model", default=d.pretrain.model,
                     help="ViT configuration: default, tiny, paper, +patch16... (default "
                          "%(default)s)")
    add_training_options(pre, d.pretrain, d.splits, threads=d.cpus_per_worker,
                         workers=d.workers)
    pre.set_defaults(handler=handle_pretrain)
    ship = train_sub.add_parser(
        "shipped-segmenter", help="reproduce the shipped calcium segmenter",
        description="Generate the shipped segmenter's synthetic cohort, run its study (MAE "
                    "pre-training and fine-tuning of fold 0, the 130 HU rule beside it, "
                    "then a second fine-tuning stage of 20 epochs), export the calibrated "
                    "fold model (float16), and fit its component filter on a second cohort "
                    "never trained on, to --to (default: the package's "
                    "cohort/model/weights/segmenter-default-synthetic.pt). About two and "
                    "three quarter hours on 2 CPU cores. SYNTHETIC phantoms only.")
    ship.add_argument("--out", required=True, metavar="URL")
    ship.add_argument("--to", metavar="PATH", help="checkpoint file to write")
    ship.set_defaults(handler=handle_shipped_segmenter)
    filt = train_sub.add_parser(
        "component-filter", help="fit the segmenter's component filter on unseen scans",
        description="Fit the second stage of a calibrated segmenter: its candidate "
                    "components (calibrated p >= 0.3) are kept or dropped by boosted trees "
                    "over their probabilities, size and surrounding CT numbers, fitted on "
                    "the crops of a cohort the segmenter never trained on (out-of-fold "
                    "figures by patient); writes the segmenter with the filter to --to.")
    filt.add_argument("--segmenter", required=True, metavar="CKPT",
                      help="calibrated segmenter checkpoint (`cohort train segmenter`)")
    filt.add_argument("--data", required=True, metavar="URL",
                      help="a synthetic cohort, or the --out folder of `cohort index` with "
                           "--labels and --masks")
    filt.add_argument("--labels", metavar="URL", help="landmark table for the crops")
    filt.add_argument("--masks", metavar="URL", help="folder of <SeriesInstanceUID>.nii.gz "
                                                     "calcium masks (the truth)")
    filt.add_argument("--out", required=True, metavar="URL", help="work folder (crop cache)")
    filt.add_argument("--to", required=True, metavar="PATH", help="checkpoint file to write")
    filt.set_defaults(handler=handle_component_filter)


def handle_segmenter(args: argparse.Namespace) -> str:
    from dataclasses import replace

    from cohort.train.seg_command import train_segmenter
    from cohort.train.seg_study import SegStudyConfig
    from cohort.train.splits import SplitConfig

    d = SegStudyConfig()
    config = replace(
        d, train=replace(d.train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         patience=args.patience, seed=args.seed,
                         init_weights=args.init_weights,
                         hard_positive_p=args.hard_positive_p, fn_weight=args.fn_weight),
        pretrain=replace(d.pretrain, epochs=args.pretrain_epochs, seed=args.seed),
        splits=SplitConfig(folds=args.folds, seed=args.seed), workers=args.workers,
        use_gpu=args.gpus, cpus_per_worker=args.threads, only_folds=tuple(args.only_folds),
        windows_per_crop=args.windows_per_crop, size=args.size)
    return train_segmenter(args.data, args.out, config, variants=tuple(args.variants),
                           labels_url=args.labels, masks_url=args.masks,
                           options=storage_options(args.s3_endpoint))


def handle_pretrain(args: argparse.Namespace) -> str:
    from dataclasses import replace

    from cohort.train.seg_command import pretrain
    from cohort.train.seg_study import SegStudyConfig

    train = replace(SegStudyConfig().pretrain, model=args.model, epochs=args.epochs,
                    batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                    seed=args.seed)
    return pretrain(args.data, args.out, train, labels_url=args.labels, workers=args.workers,
                    cpus_per_worker=args.threads, use_gpu=args.gpus,
                    options=storage_options(args.s3_endpoint))


def handle_component_filter(args: argparse.Namespace) -> str:
    from cohort.train.seg_command import fit_filter

    return fit_filter(args.segmenter, args.data, args.out, args.to, labels_url=args.labels,
                      masks_url=args.masks, options=storage_options(None))


def handle_shipped_segmenter(args: argparse.Namespace) -> str:
    from cohort.job.segmenter_checkpoint import shipped_segmenter
    from cohort.train.seg_command import ship_segmenter

    return ship_segmenter(args.out, args.to or shipped_segmenter(),
                          options=storage_options(None))


def handle_shipped(args: argparse.Namespace) -> str:
    from cohort.job.checkpoint import shipped_checkpoint
    from cohort.train.ship import RECIPES, ship

    return ship(args.out, args.to or shipped_checkpoint(), RECIPES[args.scale],
                options=storage_options(None))


def handle_decoding(args: argparse.Namespace) -> str:
    from dataclasses import replace

    from cohort.train.ship import RECIPE, calibrate_decoding

    calibration = RECIPE.calibration
    if args.patients is not None:
        calibration = replace(calibration, patients=args.patients)
    if args.seed is not None:
        calibration = replace(calibration, seed=args.seed)
    d = calibrate_decoding(args.checkpoint, args.out, replace(RECIPE, calibration=calibration),
                           storage_options(None))
    mae, acc = d["held_out_mae"], d["held_out_acc"]
    offsets = "; ".join(f"{band}: " + ", ".join(f"{n} {v:+.2f}" for n, v in per.items())
                        for band, per in d["offsets_mm"].items()) or "none"
    return (f"decoding of {args.checkpoint} on {d['scans']} held-out scans ({d['fitted_on']}):\n"
            f"  out of sample: MAE {mae['paper']:.3f} -> {mae['candidate']:.3f} slices, "
            f"Acc(tau=1) {acc['paper']:.3f} -> {acc['candidate']:.3f}: "
            f"{'kept' if d['kept'] else 'not kept (the paper decoding stays)'}\n"
            f"  mirror {d['mirror']}, rule {d['rule']}, offsets (mm): {offsets}")


def handle_localization(args: argparse.Namespace) -> str:
    from cohort.preprocess.model_input import ModelInputConfig
    from cohort.train.command import train_localization
    from cohort.train.loop import TrainConfig
    from cohort.train.splits import SplitConfig
    from cohort.train.study import StudyConfig

    config = StudyConfig(
        train=TrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                          lr=args.lr, momentum=args.momentum, optimizer=args.optimizer,
                          weight_decay=args.weight_decay,
                          target_sigma_mm=args.target_sigma_mm,
                          warmup_epochs=args.warmup_epochs, patience=args.patience,
                          seed=args.seed),
        splits=SplitConfig(folds=args.folds, seed=args.seed), workers=args.workers,
        use_gpu=args.gpus, cpus_per_worker=args.threads,
        model_input=ModelInputConfig(size=args.input_size, crop=args.crop, fov_mm=args.fov_mm))
    return train_localization(args.data, args.out, config, labels_url=args.labels,
                              ablations=tuple(args.ablations),
                              options=storage_options(args.s3_endpoint))
