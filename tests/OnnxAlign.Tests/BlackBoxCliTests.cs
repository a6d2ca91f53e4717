using System.Text.Json.Nodes;
using OnnxAlign.IO;

namespace OnnxAlign.Tests;

/// <summary>Network rewards from the command line (issue #18): generate, its report, the W2 refusal, fit-reward and the evaluator card.</summary>
[Trait("Category", "Slow")]
public sealed class BlackBoxCliTests
{
    private static string Fashion => Path.Combine(TestSupport.RepositoryRoot, "models", "fashion");
    private static string Evaluator => Path.Combine(Fashion, "evaluator");

    [Fact]
    public void GenerateWithANetworkRewardReportsTheBlackBoxRun()
    {
        string dir = TestSupport.TempDirectory(), output = Path.Combine(dir, "run");
        var (code, stdout, stderr) = CliTests.Onnxalign("generate", Fashion, "--reward", $"onnx:{Evaluator}@Trouser", "--lambda", "1", "--count", "8",
            "--steps", "5", "--particles", "16", "--max-particles-per-sample", "4", "--pilot-samples", "16", "--pilot-rounds", "2", "--features", "pca:4", "--out", output);
        Assert.True(code == 0, stderr);
        Assert.Contains("twisted-smc", stdout);
        var alignment = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!["alignment"]!;
        Assert.Equal("kl-black-box", (string)alignment["method"]!);
        Assert.Equal("tilt-smc", (string)alignment["black_box_method"]!);
        Assert.Equal(4, (int)alignment["tilt_fit"]!["feature_count"]!);
        Assert.Equal(2, alignment["tilt_fit"]!["rounds"]!.AsArray().Count);
        Assert.True((double)alignment["smc"]!["effective_sample_size"]! > 0);
        Assert.NotNull(alignment["log_partition"]!["standard_error"]);
        Assert.True((double)alignment["evaluations_per_returned_sample"]!["reward"]! > 0);
        Assert.Equal("Trouser", (string)alignment["reward_model"]!["class"]!);
        Assert.Equal([8, 1, 32, 32], NpyFile.Read(Path.Combine(output, "samples.npy")).Shape);

        // A method that weighs stochastic steps with a deterministic sampler, a fast mode, and the W2 prox: one line, exit 2.
        foreach (var args in new[]
                 {
                     new[] { "--black-box", "sir", "--sampler", "ddim" }, ["--tilt-mode", "fast"], ["--align", "w2"], ["--black-box", "nope"], ["--features", "pca:0"],
                 })
        {
            (code, _, stderr) = CliTests.Onnxalign(["generate", Fashion, "--reward", $"onnx:{Evaluator}@Trouser", "--lambda", "1", "--count", "2", "--steps", "3",
                                                    .. args, "--out", Path.Combine(dir, "bad")]);
            Assert.True(code == 2, $"{string.Join(" ", args)}: exit {code}: {stderr}");
            Assert.Single(stderr.Trim().Split('\n'));
        }
        Assert.False(Directory.Exists(Path.Combine(dir, "bad")));
    }

    [Fact]
    public void FitRewardWritesAClassifierEveryExactMethodReadsAndTheCardMakesAnyClassifierAnEvaluator()
    {
        string dir = TestSupport.TempDirectory(), fit = Path.Combine(dir, "fit");
        var (code, stdout, stderr) = CliTests.Onnxalign("fit-reward", Fashion, "--reward", $"onnx:{Evaluator}@Trouser", "--form", "log-prob",
            "--count", "40", "--steps", "3", "--out", fit);
        Assert.True(code == 0, stderr);
        Assert.Contains("held-out R²", stdout);
        Assert.Equal([10, 1024], NpyFile.Read(Path.Combine(fit, "W.npy")).Shape);
        var report = JsonNode.Parse(File.ReadAllText(Path.Combine(fit, "fit.json")))!;
        Assert.Equal($"log-prob:Trouser@{fit}", (string)report["use_as"]!);
        Assert.Equal(10, (int)report["held_out_samples"]!);
        // The fitted reward is a structured one: the fast KL mixture (a convex-only method) refuses the concave log-prob, the tilt takes its class.
        (code, _, stderr) = CliTests.Onnxalign("generate", Fashion, "--reward", $"class:Trouser@{fit}", "--lambda", "10", "--count", "4", "--steps", "3",
                                               "--tilt-mode", "fast", "--logz-samples", "0", "--out", Path.Combine(dir, "tilted"));
        Assert.True(code == 0, stderr);

        // The linear classifier's card makes it an evaluator; it has no features, so no Fréchet distance.
        (code, stdout, stderr) = CliTests.Onnxalign("quality", Fashion, "--samples", Path.Combine(dir, "tilted"), "--evaluator", Path.Combine(Fashion, "classifier"));
        Assert.True(code == 0, stderr);
        Assert.Contains("Fréchet distance    n/a (the evaluator has no feature output)", stdout);
        Assert.Contains("Trouser", stdout);
    }

    /// <summary>A killed network-reward run resumes to the uninterrupted files: the fit is read from the checkpoint (same θ), finished systems are kept.</summary>
    [Fact]
    public void AKilledNetworkRewardRunResumesToTheUninterruptedFiles()
    {
        string root = TestSupport.TempDirectory(), whole = Path.Combine(root, "whole"), resumed = Path.Combine(root, "resumed");
        string model = TestSupport.Toy("tiny-unet");
        string[] arguments = ["--reward", $"onnx:{Evaluator}@Trouser", "--lambda", "1", "--count", "16", "--steps", "20", "--particles", "8",
                              "--max-particles-per-sample", "4", "--ess-per-sample", "100", "--pilot-samples", "16", "--pilot-rounds", "1",
                              "--features", "pca:2", "--threads", "1", "--seed", "3"];
        var (code, _, stderr) = CliTests.Onnxalign(["generate", model, .. arguments, "--out", whole]);
        Assert.True(code == 0, stderr);
        using (var process = CliTests.StartAndWaitFor(Path.Combine(resumed, ".partial"), "smc_system_*.json", 2, ["generate", model, .. arguments, "--out", resumed]))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
        }
        Assert.True(File.Exists(Path.Combine(resumed, ".partial", "tilt-fit.json")));
        Assert.False(File.Exists(Path.Combine(resumed, "samples.npy")));
        (code, var stdout, stderr) = CliTests.Onnxalign(["generate", model, .. arguments, "--out", resumed, "--resume"]);
        Assert.True(code == 0, stderr);
        Assert.Contains("resuming:", stdout);
        Assert.DoesNotContain("fitting the proposal tilt", stdout);
        foreach (var file in Directory.GetFiles(whole).Select(Path.GetFileName).Where(f => f != "report.json"))
            Assert.True(File.ReadAllBytes(Path.Combine(whole, file!)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(resumed, file!))), $"{file} differs");
    }
}
