"""Train a salt-segmentation model on one fold.

    python3 train.py --arch wide_resnet_v1 --batch_size=32 --loss BCE --optimizer adam_1e-4 \
        --experiment_dir experiments/wide_fold0_128 --n_epochs 200 --train_augs train_128_v1 \
        --val_augs val_128_resize --val_transforms resize_from_any --fold 0 --data_dir data

Reads DATA_DIR/train_images.npy and train_masks.npy (utils/stack_and_save.py) and the folds
file (utils/make_folds.py). Writes EXP/train_config.json, EXP/logs/log.csv and, whenever the
validation loss or score improves, a snapshot with its validation masks under EXP/snapshots/.
Runs under torchrun for several processes: torchrun --nproc_per_node=N train.py ...
"""
from net.training import build_config, load_fold, parse_args, registries  # noqa: F401  (the script's API)
from net.training import main as train_main
from utils.errors import run_cli


def main(argv=None):
    return train_main(argv)


if __name__ == '__main__':
    run_cli(main)
