using System.Text.Json.Nodes;
using OnnxAlign.ModelForge;
using OnnxAlign.Core;
using OnnxAlign.Estimation;
using OnnxAlign.Evaluation;
using OnnxAlign.IO;
using OnnxAlign.Rewards;

namespace OnnxAlign.Tests;

public class RewardTests
{
    /// <summary>A classifier folder whose classes.json miscounts or repeats a class, or whose W.npy holds no class or NaN, is refused naming the reward (a name must pick one class).</summary>
    [Theory]
    [InlineData(2, "[\"a\", \"b\", \"c\"]", false, "classes.json names 3 classes, W.npy has 2")]
    [InlineData(2, "[\"a\", \"A\"]", false, "classes.json names 'a' more than once")]
    [InlineData(0, "[]", false, "holds no class")]
    [InlineData(2, "[\"a\", \"b\"]", true, "holds NaN or ±∞ weights")]
    public void ClassifierFoldersThatCannotNameOneClassAreRefused(int classes, string names, bool nan, string why)
    {
        string dir = TestSupport.TempDirectory();
        var w = new float[classes * 2];
        if (nan) w[1] = float.NaN;
        NpyFile.Write(Path.Combine(dir, "W.npy"), w, [classes, 2]);
        NpyFile.Write(Path.Combine(dir, "b.npy"), new float[classes], [classes]);
        File.WriteAllText(Path.Combine(dir, "classes.json"), names);
        var e = Assert.Throws<ConfigException>(() => RewardSpec.ParseLinear($"class:0@{dir}", [2], null));
        Assert.Equal("reward", e.Parameter);
        Assert.Contains(why, e.Message);
    }

    private static readonly int[] Image = [3, 4, 4];

    [Fact]
    public void BuiltInImageRewards()
    {
        var x = Enumerable.Range(0, 48).Select(i => (float)(i / 48.0)).ToArray();
        Assert.Equal(x.Average(), RewardSpec.Parse("brightness", Image, null).Evaluate(x), 5);
        Assert.Equal(x.Skip(16).Take(16).Average(), RewardSpec.Parse("channel-mean:1", Image, null).Evaluate(x), 5);
        var theta = RewardSpec.ParseLinear("brightness", Image, null).Tilt(0.5);
        Assert.All(theta, v => Assert.Equal(1f / 48 / 0.5f, v, 6));
    }

    [Fact]
    public void RegionAndDirectionFromFiles()
    {
        string dir = TestSupport.TempDirectory();
        var mask = new float[16];
        mask[5] = 1; mask[6] = 1; // two white pixels, the rest black ([-1,1] scale below)
        ImageFiles.WritePng(Path.Combine(dir, "mask.png"), mask.Select(v => v * 2 - 1).ToArray(), [1, 4, 4]);
        var x = Enumerable.Range(0, 48).Select(i => (float)i).ToArray();
        double expected = (x[5] + x[6] + x[21] + x[22] + x[37] + x[38]) / 6;
        Assert.Equal(expected, RewardSpec.Parse($"region-brightness:{Path.Combine(dir, "mask.png")}", Image, null).Evaluate(x), 3);

        var a = Enumerable.Range(0, 48).Select(i => (float)Math.Sin(i)).ToArray();
        NpyFile.Write(Path.Combine(dir, "a.npy"), a, Image);
        Assert.Equal(a.Zip(x, (p, q) => (double)p * q).Sum(), RewardSpec.Parse($"direction:{Path.Combine(dir, "a.npy")}", Image, null).Evaluate(x), 2);
    }

    [Fact]
    public void LinearClassifierLogitByIndexOrName()
    {
        string model = TestSupport.TempDirectory();
        string classifier = Path.Combine(model, "classifier");
        Directory.CreateDirectory(classifier);
        var w = Enumerable.Range(0, 2 * 48).Select(i => (float)(i % 7 - 3)).ToArray();
        NpyFile.Write(Path.Combine(classifier, "W.npy"), w, [2, 48]);
        NpyFile.Write(Path.Combine(classifier, "b.npy"), [0.5f, -1.5f], [2]);
        File.WriteAllText(Path.Combine(model, "classes.json"), """["Shirt", "Trouser"]""");
        var x = Enumerable.Range(0, 48).Select(i => (float)(i * 0.01)).ToArray();
        double expected = w.Skip(48).Zip(x, (p, q) => (double)p * q).Sum() - 1.5;
        Assert.Equal(expected, RewardSpec.Parse("class:1", Image, model).Evaluate(x), 4);
        Assert.Equal(expected, RewardSpec.Parse("class:trouser", Image, model).Evaluate(x), 4);
        Assert.Contains("Shirt, Trouser", Assert.Throws<ConfigException>(() => RewardSpec.Parse("class:Bag", Image, model)).Message);

        // log-prob: log-softmax of the same logits, concave, over both classes.
        var logits = new[] { w.Take(48).Zip(x, (p, q) => (double)p * q).Sum() + 0.5, expected };
        var logProb = Assert.IsType<FeatureReward>(RewardSpec.Parse("log-prob:Trouser", Image, model));
        Assert.Equal(logits[1] - Numerics.LogSumExp(logits), logProb.Evaluate(x), 4);
        Assert.Equal(Curvature.Concave, logProb.Function.Curvature);
        Assert.Contains("not a linear reward", Assert.Throws<ConfigException>(() => RewardSpec.ParseLinear("log-prob:1", Image, model)).Message);
    }

    [Fact]
    public void LowRankRewardsEvaluateTheirFeatureFunctions()
    {
        var x = Enumerable.Range(0, 48).Select(i => (float)(i * 0.02 - 0.4)).ToArray();
        double[] means = [.. Enumerable.Range(0, 3).Select(c => x.Skip(16 * c).Take(16).Average(v => (double)v))];
        var colour = RewardSpec.Parse("color-target:1,0.5,0", Image, null);
        Assert.Equal(-(Math.Pow(means[0] - 1, 2) + Math.Pow(means[1], 2) + Math.Pow(means[2] + 1, 2)), colour.Evaluate(x), 5);

        double brightness = x.Average(v => (double)v);
        var ramp = Assert.IsType<FeatureReward>(RewardSpec.Parse("ramp:brightness,-0.1,0.2", Image, null));
        Assert.Equal(Math.Clamp((brightness + 0.1) / 0.3, 0, 1), ramp.Evaluate(x), 5);
        Assert.Equal(1 / 0.3, ramp.Function.LipschitzConstant, 9);

        string dir = TestSupport.TempDirectory();
        var a = Enumerable.Range(0, 2 * 48).Select(i => (float)((i % 5) - 2) / 48).ToArray();
        NpyFile.Write(Path.Combine(dir, "A.npy"), a, [2, 3, 4, 4]);
        var z = Enumerable.Range(0, 2).Select(j => a.Skip(48 * j).Take(48).Zip(x, (p, q) => (double)p * q).Sum()).ToArray();
        var bump = RewardSpec.Parse($"lowrank:{Path.Combine(dir, "A.npy")}:bump:0.1,-0.1,0.5", Image, null);
        Assert.Equal(Math.Exp(-(Math.Pow(z[0] - 0.1, 2) + Math.Pow(z[1] + 0.1, 2)) / (2 * 0.25)), bump.Evaluate(x), 5);
        Assert.Equal(z.Max(), RewardSpec.Parse($"lowrank:{Path.Combine(dir, "A.npy")}:max", Image, null).Evaluate(x), 5);
        Assert.Equal(z.Min(), RewardSpec.Parse($"lowrank:{Path.Combine(dir, "A.npy")}:min", Image, null).Evaluate(x), 5);
        Assert.Contains("expected 2 centre values", Assert.Throws<ConfigException>(() => RewardSpec.Parse($"lowrank:{Path.Combine(dir, "A.npy")}:bump:0.1,0.5", Image, null)).Message);
        Assert.Contains("takes 1 feature", Assert.Throws<ConfigException>(() => RewardSpec.Parse($"lowrank:{Path.Combine(dir, "A.npy")}:ramp:0,1", Image, null)).Message);
    }

    [Theory]
    [InlineData("sharpness", "unknown reward")]
    [InlineData("channel-mean:3", "channel index")]
    [InlineData("channel-mean:x", "channel index")]
    [InlineData("direction:/nonexistent.npy", "/nonexistent.npy")]
    [InlineData("class:0", "W.npy")]
    public void MalformedSpecsAreClearErrors(string spec, string mentioned)
    {
        var e = Assert.Throws<ConfigException>(() => RewardSpec.Parse(spec, Image, TestSupport.TempDirectory()));
        Assert.Contains(mentioned, e.Message);
    }

    [Fact]
    public void CliTiltMovesTheMeanToTheAnalyticTiltedMean()
    {
        // Acceptance: generate models/toy/gmm2d --reward direction:a.npy --lambda L lands on the mean of p·e^{⟨a,x⟩/λ}.
        string dir = TestSupport.TempDirectory();
        NpyFile.Write(Path.Combine(dir, "a.npy"), [0f, -1.5f], [2]);
        var (code, _, stderr) = CliTests.Onnxalign("generate", TestSupport.Toy("gmm2d"), "--reward", $"direction:{Path.Combine(dir, "a.npy")}",
            "--lambda", "0.5", "--count", "4000", "--steps", "50", "--sampler", "dpm++2m", "--reference-count", "500", "--tilt-mode", "fast", "--out", Path.Combine(dir, "run"));
        Assert.True(code == 0, stderr);
        var report = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "run", "report.json")))!;
        var q = ToyModels.Gmm2d.Tilted([0.0, -3.0]);
        var mean = report["statistics"]!["mean"]!.AsArray().Select(v => (double)v!).ToArray();
        var cov = report["statistics"]!["covariance"]!.AsArray().Select(v => (double)v!).ToArray();
        for (int i = 0; i < 2; i++)
            Assert.True(Math.Abs(mean[i] - q.Mean()[i]) <= Moments.Z * Math.Sqrt(cov[i * 3] / 4000), $"mean[{i}] {mean[i]} vs {q.Mean()[i]}");
        var alignment = report["alignment"]!;
        Assert.Equal(3.0, (double)alignment["theta_norm"]!, 5);
        Assert.True((double)alignment["reward_after"]!["mean"]! > (double)alignment["reward_before"]!["mean"]! + 2);
        double logZ = ToyModels.Gmm2d.LogPartition([0.0, -3.0]);
        var lz = alignment["log_partition"]!;
        Assert.True(Math.Abs((double)lz["value"]! - logZ) <= Moments.Z * (double)lz["standard_error"]!, $"log Z {lz["value"]} vs {logZ}");
        Assert.True((double)alignment["max_shift_ratio"]! > 1);
    }

    [Theory]
    [InlineData(new[] { "--reward", "brightness", "--lambda", "0" }, "--lambda")]
    [InlineData(new[] { "--reward", "brightness", "--lambda", "Infinity" }, "--lambda")]
    [InlineData(new[] { "--reward", "brightness" }, "--lambda")]
    [InlineData(new[] { "--lambda", "1" }, "--lambda needs --reward")]
    [InlineData(new[] { "--reward", "brightness", "--lambda", "1", "--tilt-mode", "plain" }, "--tilt-mode")]
    [InlineData(new[] { "--reward", "brightness", "--lambda", "0,5" }, "--lambda '0,5'")]
    [InlineData(new[] { "--reward", "brightness", "--lambda", "1", "--data-range", "1,-1" }, "--data-range")]
    [InlineData(new[] { "--reward", "brightness", "--lambda", "1", "--particles", "1" }, "--particles 1")]
    [InlineData(new[] { "--reward", "brightness", "--lambda", "1", "--proposal-scale", "2" }, "--proposal-scale 2")]
    [InlineData(new[] { "--reward", "brightness", "--lambda", "1", "--shard", "0/2" }, "--shard")]
    [InlineData(new[] { "--count", "1,000" }, "--count '1,000'")]
    [InlineData(new[] { "--reward", "brightness", "--lambda", "1", "--tilt-mode", "fast", "--logz-samples", "1" }, "--logz-samples 1")]
    public void CliRejectsBadAlignmentFlags(string[] flags, string mentioned)
    {
        var (code, _, stderr) = CliTests.Onnxalign(["generate", TestSupport.Toy("gmm2d"), "--out", Path.Combine(TestSupport.TempDirectory(), "r"), .. flags]);
        Assert.Equal(2, code);
        Assert.Contains(mentioned, stderr);
    }
}

public class HybridCliTests
{
    [Fact]
    public void HybridModeEstimatesTheDataVarianceAndReportsSurrogateSteps()
    {
        string dir = TestSupport.TempDirectory();
        var (code, _, stderr) = CliTests.Onnxalign("generate", TestSupport.Toy("gmm-image"), "--reward", "brightness", "--lambda", "0.05",
            "--tilt-mode", "hybrid", "--trust-radius", "2", "--count", "32", "--steps", "20", "--logz-samples", "0", "--out", dir, "--overwrite");
        Assert.True(code == 0, stderr);
        var alignment = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "report.json")))!["alignment"]!;
        Assert.Equal("hybrid", (string)alignment["tilt_mode"]!);
        Assert.Equal("estimated from 256 base samples", (string)alignment["data_variance_source"]!);
        // The hybrid law has no known log Z: report.json says so instead of borrowing the exact tilt's.
        Assert.Null(alignment["kl_divergence"]!["value"]);
        Assert.Contains("no known log Z", (string)alignment["kl_divergence"]!["reason"]!);
        // Exact mean per-pixel variance of the mixture, against the estimate from 256 base samples. A sample variance
        // from n = 256 has relative SE √(2/(n−1)) ≈ 0.089; averaging correlated pixels cannot make it worse, so
        // 4.5 SE = 4.5 · 0.089 · v bounds the error.
        var mixture = OnnxAlign.Evaluation.GaussianMixture.Load(Path.Combine(TestSupport.Toy("gmm-image"), "mixture.json"));
        var covariance = mixture.Covariance();
        double exact = Enumerable.Range(0, 64).Average(i => covariance[i * 64 + i]);
        double tolerance = Moments.Z * Math.Sqrt(2.0 / 255) * exact;
        Assert.True(Math.Abs((double)alignment["data_variance"]! - exact) <= tolerance, $"variance {alignment["data_variance"]} vs {exact:F4} ± {tolerance:F4}");
        Assert.True((long)alignment["surrogate_sample_steps"]! > 0);
        Assert.Null(alignment["log_partition"]);
    }
}
