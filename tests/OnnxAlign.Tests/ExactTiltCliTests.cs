using System.Text.Json.Nodes;
using OnnxAlign.ModelForge;
using OnnxAlign.Estimation;
using OnnxAlign.IO;

namespace OnnxAlign.Tests;

/// <summary>The exact tilt from the command line: its report, its resume, and the verify audit (issue #15).</summary>
[Trait("Category", "Slow")]
public class ExactTiltCliTests
{
    [Fact]
    public void ExactModeReportsItsSmcAndTheKlOfItsOwnWeights()
    {
        string dir = TestSupport.TempDirectory();
        NpyFile.Write(Path.Combine(dir, "a.npy"), [0f, -1.5f], [2]);
        var (code, stdout, stderr) = CliTests.Onnxalign("generate", TestSupport.Toy("gmm2d"), "--reward", $"direction:{Path.Combine(dir, "a.npy")}",
            "--lambda", "0.5", "--count", "256", "--steps", "200", "--sampler", "ddpm", "--particles", "128", "--out", Path.Combine(dir, "run"));
        Assert.True(code == 0, stderr);
        Assert.Contains("exact tilt (twisted-smc)", stdout);
        var alignment = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "run", "report.json")))!["alignment"]!;
        Assert.Equal("exact", (string)alignment["tilt_mode"]!);
        var smc = alignment["smc"]!;
        Assert.True((bool)smc["reached_target"]!);
        Assert.True((double)smc["effective_sample_size"]! >= 256);
        // θ = (0, −3): KL and log Z of the returned law against the closed form, within the standard errors and the
        // 200-step discretisation (the SMC targets the sampler's own law).
        double logZ = ToyModels.Gmm2d.LogPartition([0.0, -3.0]);
        double kl = 3.0 * -ToyModels.Gmm2d.Tilted([0.0, -3.0]).Mean()[1] - logZ;
        var klNode = alignment["kl_divergence"]!;
        Assert.True(Math.Abs((double)klNode["value"]! - kl) <= Moments.Z * (double)klNode["standard_error"]! + 0.1, $"KL {klNode["value"]} vs {kl}");
        var lz = alignment["log_partition"]!;
        Assert.True(Math.Abs((double)lz["value"]! - logZ) <= Moments.Z * (double)lz["standard_error"]! + 0.1, $"log Z {lz["value"]} vs {logZ}");
        Assert.Equal([256, 2], NpyFile.Read(Path.Combine(dir, "run", "samples.npy")).Shape);
    }

    [Fact]
    public void KilledExactRunResumesToTheUninterruptedFiles()
    {
        string root = TestSupport.TempDirectory(), whole = Path.Combine(root, "whole"), resumed = Path.Combine(root, "resumed");
        string model = TestSupport.Toy("tiny-unet");
        string[] arguments = ["--reward", "brightness", "--lambda", "0.05", "--count", "32", "--steps", "60", "--particles", "8",
                              "--max-particles-per-sample", "4", "--ess-per-sample", "100", "--threads", "1", "--seed", "2"];
        var (code, _, stderr) = CliTests.Onnxalign(["generate", model, .. arguments, "--out", whole]);
        Assert.True(code == 0, stderr);
        using (var process = CliTests.StartAndWaitFor(Path.Combine(resumed, ".partial"), "smc_system_*.json", 2, ["generate", model, .. arguments, "--out", resumed]))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
        }
        Assert.False(File.Exists(Path.Combine(resumed, "samples.npy")));
        (code, var stdout, stderr) = CliTests.Onnxalign(["generate", model, .. arguments, "--out", resumed, "--resume"]);
        Assert.True(code == 0, stderr);
        Assert.Contains("resuming:", stdout);
        foreach (var file in Directory.GetFiles(whole).Select(Path.GetFileName).Where(f => f != "report.json"))
            Assert.True(File.ReadAllBytes(Path.Combine(whole, file!)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(resumed, file!))), $"{file} differs");
    }

    [Fact]
    public void VerifyAuditsTheExactTiltAgainstImportanceWeightedBaseSamples()
    {
        string dir = TestSupport.TempDirectory();
        NpyFile.Write(Path.Combine(dir, "a.npy"), [0f, -1f], [2]);
        var (code, stdout, stderr) = CliTests.Onnxalign("verify", TestSupport.Toy("gmm2d"), "--reward", $"direction:{Path.Combine(dir, "a.npy")}",
            "--lambda", "1,0.5", "--sampler", "ddpm", "--steps", "100", "--base-count", "20000", "--count", "512", "--particles", "128", "--out", Path.Combine(dir, "audit"));
        Assert.True(code == 0, stderr);
        Assert.Contains("exact: agrees", stdout);
        var audits = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "audit", "report.json")))!["audits"]!.AsArray();
        Assert.Equal(2, audits.Count);
        foreach (var audit in audits)
        {
            Assert.True((bool)audit!["ground_truth"]!["reliable"]!);
            var exact = audit["runs"]!.AsArray().First(r => (string)r!["mode"]! == "exact")!;
            Assert.True((bool)exact["agrees"]!, $"λ = {audit["lambda"]}: max |z| {exact["max_abs_z"]}");
            Assert.True(Math.Abs((double)exact["kl_z"]!) < 4, $"λ = {audit["lambda"]}: KL z {exact["kl_z"]}");
        }
    }
}
