using OnnxAlign.Core;
using OnnxAlign.Evaluation;
using OnnxAlign.Model;
using OnnxAlign.Rewards;

namespace OnnxAlign.Tests;

/// <summary>ONNX reward models and their cards (issue #18): how a network is fed, and one-line errors for every bad card.</summary>
public sealed class RewardCardTests
{
    private static string Evaluator => Path.Combine(TestSupport.RepositoryRoot, "models", "fashion", "evaluator");

    private static readonly int[] FashionShape = [1, 32, 32];

    private static float[] Images(int n, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, n * 1024).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
    }

    /// <summary>A folder with the evaluator's model and the given card (and optional preprocessor config).</summary>
    private static string Folder(string? card, string? preprocessor = null, bool classes = true)
    {
        string dir = TestSupport.TempDirectory();
        File.Copy(Path.Combine(Evaluator, "model.onnx"), Path.Combine(dir, "model.onnx"));
        if (classes) File.Copy(Path.Combine(Evaluator, "classes.json"), Path.Combine(dir, "classes.json"));
        if (card is not null) File.WriteAllText(Path.Combine(dir, "reward.json"), card);
        if (preprocessor is not null) File.WriteAllText(Path.Combine(dir, "preprocessor_config.json"), preprocessor);
        return dir;
    }

    [Fact]
    public void TheEvaluatorsCardMakesItsClassLogProbabilityAReward()
    {
        using var reward = RewardSpec.Parse($"onnx:{Evaluator}@Trouser", FashionShape, null);
        var network = Assert.IsType<OnnxReward>(reward);
        Assert.True(reward.IsBlackBox);
        Assert.False(reward.HasGradient);
        Assert.Equal(1, network.Index);
        Assert.Equal("Trouser", network.IndexName);
        var x = Images(5, 1);
        var r = reward.EvaluateBatch(x);
        // The same numbers through the evaluator's own path: log-softmax of its logits.
        using var evaluator = new ImageEvaluator(Evaluator);
        var logits = evaluator.Evaluate(x, 5, FashionShape);
        for (int i = 0; i < 5; i++) Assert.Equal(Math.Log(logits.Probability(i, 1)), r[i], 1e-5);
        Assert.Equal(5, network.Evaluations);
        // By number, and through the .onnx file with the card beside it.
        using var byNumber = RewardSpec.Parse($"onnx:{Path.Combine(Evaluator, "model.onnx")}@1", FashionShape, null);
        Assert.Equal(r, byNumber.EvaluateBatch(x));
        Assert.Throws<NotSupportedException>(() => reward.Gradient(new double[1024], new double[1024]));
    }

    [Fact]
    public void SamplesOfAnotherSizeOrColourAreResizedAndConverted()
    {
        string dir = Folder("""{ "output": "logits", "range": [-1, 1], "transform": "raw", "index": 0 }""");
        var card = RewardCard.Read(dir);
        // An RGB 16×16 sample of one colour becomes a grey 32×32 image of its BT.601 luma.
        using var model = new OnnxImageModel(card, [3, 16, 16], null);
        Assert.Equal([1, 32, 32], model.InputShape);
        var rgb = new float[3 * 256];
        rgb.AsSpan(0, 256).Fill(1f);      // red = 1 → u = 1
        rgb.AsSpan(256, 256).Fill(-1f);   // green = −1 → u = 0
        rgb.AsSpan(512, 256).Fill(0f);    // blue = 0 → u = 0.5
        var input = model.Preprocess(rgb, 1);
        double luma = 0.299 * 1 + 0.587 * 0 + 0.114 * 0.5;
        Assert.All(input, v => Assert.Equal(2 * luma - 1, v, 1e-5));
        // Bilinear resizing with half-pixel centres: a ramp stays a ramp, the ends clamp.
        var ramp = new float[] { 0, 1 };
        var wide = new float[4];
        OnnxImageModel.Resize(ramp, 1, 2, wide, 1, 4);
        Assert.Equal([0f, 0.25f, 0.75f, 1f], wide);
    }

    [Fact]
    public void HuggingFacesPreprocessorConfigSaysHowInputsAreScaled()
    {
        string dir = Folder("""{ "output": "logits" }""", """{ "do_rescale": true, "rescale_factor": 0.00392156862745098, "do_normalize": true, "image_mean": [0.5], "image_std": [0.25], "size": {"height": 32, "width": 32} }""");
        var card = RewardCard.Read(dir);
        Assert.Equal([32, 32], card.Size!);
        using var model = new OnnxImageModel(card, FashionShape, new DataRange(0, 1));
        var x = new float[1024];
        x[0] = 1; x[1] = 0.5f; x[2] = 0; x[3] = 2;   // 2 is clamped to the image's 1
        var input = model.Preprocess(x, 1);
        Assert.Equal(2, input[0], 5);
        Assert.Equal(0, input[1], 5);
        Assert.Equal(-2, input[2], 5);
        Assert.Equal(2, input[3], 5);
    }

    public static TheoryData<string?, string?, string> BadCards => new()
    {
        { null, null, "no reward card" },
        { "{ not json", null, "not valid JSON" },
        { "[1, 2]", null, "expected a JSON object" },
        { """{ "range": [-1, 1], "ouput": "logits" }""", null, "unknown field 'ouput'" },
        { """{ "output": "logits" }""", null, "neither the input 'range'" },
        { """{ "output": "logits", "range": [1, -1] }""", null, "low < high" },
        { """{ "output": "logits", "range": [-1, 1], "normalize": {"mean": [0], "std": [1]} }""", null, "not both" },
        { """{ "output": "logits", "normalize": {"mean": [0, 0], "std": [1]} }""", null, "equally long" },
        { """{ "output": "logits", "range": [-1, 1], "transform": "softmax" }""", null, "'transform' is 'softmax'" },
        { """{ "output": "logits", "range": [-1, 1], "index": -1 }""", null, "'index' must be" },
        { """{ "output": "logits", "range": [-1, 1], "size": [32] }""", null, "'size' must be [H, W]" },
        { """{ "output": "logits", "range": [-1, 1], "model": "other.onnx" }""", null, "other.onnx: no such file" },
        { """{ "output": "logits" }""", """{ "do_normalize": "yes" }""", "'do_normalize' must be true or false" },
    };

    [Theory]
    [MemberData(nameof(BadCards))]
    public void ABadCardIsOneLineNamingItsFile(string? card, string? preprocessor, string expected)
    {
        string dir = Folder(card, preprocessor);
        var error = Assert.Throws<ConfigException>(() => RewardSpec.Parse($"onnx:{dir}@Trouser", FashionShape, null));
        Assert.Equal("reward", error.Parameter);
        Assert.Contains(expected, error.Message);
        Assert.DoesNotContain('\n', error.Message);
    }

    public static TheoryData<string, string, string> BadModels => new()
    {
        { """{ "output": "nope", "range": [-1, 1] }""", "@Trouser", "has no output 'nope' (outputs: " },
        { """{ "range": [-1, 1] }""", "@Trouser", "the card must name one ('output')" },
        { """{ "input": "y", "output": "logits", "range": [-1, 1] }""", "@Trouser", "has no input 'y'" },
        { """{ "output": "logits", "range": [-1, 1], "size": [28, 28] }""", "@Trouser", "is fixed at [32, 32]" },
        { """{ "output": "logits", "range": [-1, 1] }""", "", "has 10 values per sample; name one" },
        { """{ "output": "logits", "range": [-1, 1] }""", "@Jacket", "unknown class 'Jacket' (expected 0..9 or one of T-shirt, Trouser" },
        { """{ "output": "logits", "range": [-1, 1] }""", "@12", "unknown class '12'" },
        { """{ "output": "logits", "range": [-1, 1] }""", "@", "expected a class after '@'" },
    };

    [Theory]
    [MemberData(nameof(BadModels))]
    public void AModelThatDoesNotFitItsCardIsOneLine(string card, string suffix, string expected)
    {
        string dir = Folder(card);
        var error = Assert.Throws<ConfigException>(() => RewardSpec.Parse($"onnx:{dir}{suffix}", FashionShape, null));
        Assert.Equal("reward", error.Parameter);
        Assert.Contains(expected, error.Message);
        Assert.DoesNotContain('\n', error.Message);
    }

    /// <summary>
    /// fit-reward's regression recovers a network that is linear: the linear classifier's ONNX export, fitted on random
    /// images, gives back its own W and b (held-out R² ≈ 1), and the log-prob form its class decisions.
    /// </summary>
    [Fact]
    public void FittingALinearNetworkGivesBackItsWeights()
    {
        string classifier = Path.Combine(TestSupport.RepositoryRoot, "models", "fashion", "classifier");
        var w = OnnxAlign.IO.NpyFile.Read(Path.Combine(classifier, "W.npy")).Data;
        var b = OnnxAlign.IO.NpyFile.Read(Path.Combine(classifier, "b.npy")).Data;
        var x = Images(1600, 3);
        using (var raw = (OnnxReward)RewardSpec.Parse($"onnx:{classifier}@Trouser", FashionShape, null))
        {
            var fit = OnnxAlign.Alignment.RewardFit.Fit(raw, x, OnnxAlign.Alignment.RewardFitForm.Linear, heldOut: 0.2, ridge: 1e-8);
            Assert.True(fit.HeldOutRSquared > 0.9999, $"held-out R² {fit.HeldOutRSquared}");
            for (int j = 0; j < 1024; j += 37) Assert.Equal(w[1024 + j], fit.W[j], 2e-3);
            Assert.Equal(b[1], fit.B[0], 2e-3);
            Assert.Equal("form", Assert.Throws<ConfigException>(() => OnnxAlign.Alignment.RewardFit.Fit(raw, x, OnnxAlign.Alignment.RewardFitForm.LogProb)).Parameter);
        }
        string dir = TestSupport.TempDirectory();
        File.Copy(Path.Combine(classifier, "model.onnx"), Path.Combine(dir, "model.onnx"));
        File.Copy(Path.Combine(classifier, "classes.json"), Path.Combine(dir, "classes.json"));
        File.WriteAllText(Path.Combine(dir, "reward.json"), """{ "output": "logits", "range": [-1, 1], "transform": "log_softmax" }""");
        using var logProb = (OnnxReward)RewardSpec.Parse($"onnx:{dir}@Trouser", FashionShape, null);
        var full = OnnxAlign.Alignment.RewardFit.Fit(logProb, x, OnnxAlign.Alignment.RewardFitForm.LogProb, heldOut: 0.2, ridge: 1e-8);
        Assert.Equal(10, full.Rows);
        Assert.Equal("Trouser", full.ClassNames[full.Index]);
        Assert.True(full.HeldOutArgmaxAgreement > 0.99, $"agreement {full.HeldOutArgmaxAgreement}");
        Assert.True(full.HeldOutRSquared > 0.999, $"held-out R² {full.HeldOutRSquared}");
    }

    [Fact]
    public void SamplesThatAreNotImagesAreRefused()
    {
        var error = Assert.Throws<ConfigException>(() => RewardSpec.Parse($"onnx:{Evaluator}@Trouser", [2], null));
        Assert.Contains("image rewards need image samples", error.Message);
        Assert.Contains("no such folder", Assert.Throws<ConfigException>(() => RewardSpec.Parse("onnx:/no/such/reward@1", FashionShape, null)).Message);
    }
}
