"""Reference parameter counts of every registered model, shared by the model tests."""

# Parameter count of every registered model at its canonical input (registry defaults).
EXPECTED_PARAMS = {
    # LeNet300 (fully connected, 28x28): 784*10+10; +784*300+300 ...; the LeNet-300-100 of the papers.
    "lenet300_linear": 7_850,
    "lenet300": 238_510,
    "lenet300_100": 266_610,
    # LeNet-1 with a fully connected C3 (the 1989 net's sparse C3 had ~2,600), LeNet-5 common form.
    "lenet1": 3_246,
    "lenet5": 61_706,
    # AlexNet, single tower as the lectures' table counts it.
    "alexnet": 62_378_344,
    # VGG, torchvision's counts; C and A-LRN computed (A-LRN = A: LRN has no parameters;
    # C = D - 3 * (3x3 - 1x1) = 138,357,544 - (524,288 + 2 * 2,097,152)).
    "vgg11": 132_863_336,
    "vgg11_lrn": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16_c": 133_638_952,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840,
    "vgg13_bn": 133_053_736,
    "vgg16_c_bn": 133_647_400,
    "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
    # GoogLeNet, ResNet: torchvision's counts (googlenet without aux heads; 13,004,888 with them).
    "googlenet": 6_624_904,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    # Plain nets (ResNet paper, Fig. 4): ResNet minus its 3 projection shortcuts (173,824 params).
    "plain18": 11_515_688,
    "plain34": 21_623_848,
    # MobileNet v1 at width 1.0 (the paper's 4.2M; Keras's trainable count).
    "mobilenet_v1": 4_231_976,
}
