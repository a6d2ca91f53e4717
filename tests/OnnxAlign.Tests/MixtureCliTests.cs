using System.Text.Json.Nodes;
using OnnxAlign.IO;
using static OnnxAlign.Tests.CliTests;

namespace OnnxAlign.Tests;

/// <summary><c>generate --align kl</c> picks the exact algorithm from the reward's structure (issue #5).</summary>
public class MixtureCliTests
{
    private static string Gmm2d => TestSupport.Toy("gmm2d");

    private static string Directions(string dir)
    {
        NpyFile.Write(Path.Combine(dir, "e0.npy"), [1f, 0f], [2]);
        NpyFile.Write(Path.Combine(dir, "e1.npy"), [0f, 1f], [2]);
        NpyFile.Write(Path.Combine(dir, "W.npy"), [1f, 0f, 0f, 1f, -1f, 0f], [3, 2]);
        NpyFile.Write(Path.Combine(dir, "b.npy"), [0f, 0.5f, 0f], [3]);
        File.WriteAllText(Path.Combine(dir, "classes.json"), """["east", "north", "west"]""");
        return dir;
    }

    [Theory]
    [InlineData("max(direction:{0}/e0.npy|direction:{0}/e1.npy)", "0.5", "kl-tangent-mixture")]
    [InlineData("variance(direction:{0}/e0.npy|direction:{0}/e1.npy)", "1", "kl-hubbard-stratonovich")]
    [InlineData("any-class:east|north@{0},0.5", "0.5", "kl-exact-mixture")]
    public void Generate_align_kl_picks_the_method_from_the_structure(string spec, string lambda, string method)
    {
        string dir = Directions(TestSupport.TempDirectory()), output = TestSupport.TempDirectory();
        var (code, stdout, stderr) = Onnxalign("generate", Gmm2d, "--reward", string.Format(spec, dir), "--lambda", lambda, "--count", "100",
                                               "--steps", "50", "--sampler", "ddim", "--out", output, "--overwrite", "--reference-count", "100", "--tilt-mode", "fast");
        Assert.True(code == 0, stderr);
        Assert.Contains("KL mixture", stdout);
        var report = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!;
        var alignment = report["alignment"]!;
        Assert.Equal(method, (string)alignment["method"]!);
        Assert.Equal([100, 2], NpyFile.Read(Path.Combine(output, "samples.npy")).Shape);
        Assert.InRange((double)alignment["acceptance_rate"]!, 0.05, 1.0);
        // Alignment raises the reward's mean over the untilted reference of the same seeds.
        Assert.True((double)alignment["reward_after"]!["mean"]! > (double)alignment["reward_before"]!["mean"]!);
        Assert.True((long)report["network_evaluations"]! > (long)alignment["setup_network_evaluations"]!);
    }

    /// <summary>The exact mode (the default) samples p·e^{f(Ax)/λ} by SMC with a tangent tilt as proposal, and reports it.</summary>
    [Fact]
    public void Generate_align_kl_samples_a_low_rank_reward_exactly_by_default()
    {
        string dir = Directions(TestSupport.TempDirectory()), output = TestSupport.TempDirectory();
        var (code, stdout, stderr) = Onnxalign("generate", Gmm2d, "--reward", $"max(direction:{dir}/e0.npy|direction:{dir}/e1.npy)", "--lambda", "0.5",
                                               "--count", "100", "--steps", "30", "--sampler", "ddpm", "--out", output, "--overwrite", "--reference-count", "100");
        Assert.True(code == 0, stderr);
        var alignment = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!["alignment"]!;
        Assert.Equal("kl-exact-smc", (string)alignment["method"]!);
        Assert.Equal("twisted-smc", (string)alignment["smc"]!["algorithm"]!);
        Assert.True((double)alignment["reward_after"]!["mean"]! > (double)alignment["reward_before"]!["mean"]!);
        Assert.True((double)alignment["kl_divergence"]!["value"]! > 0);
    }

    /// <summary>A killed KL-mixture run resumes (set-up and finished proposal batches kept in .partial/) to the uninterrupted samples.</summary>
    [Fact]
    public void Killed_mixture_run_resumes_to_the_uninterrupted_samples()
    {
        string dir = Directions(TestSupport.TempDirectory()), root = TestSupport.TempDirectory();
        string whole = Path.Combine(root, "whole"), resumed = Path.Combine(root, "resumed");
        string[] arguments = ["generate", Gmm2d, "--reward", $"max(direction:{dir}/e0.npy|direction:{dir}/e1.npy)", "--lambda", "0.5",
                              "--count", "20000", "--batch", "64", "--steps", "20", "--sampler", "ddim", "--seed", "4", "--threads", "1", "--tilt-mode", "fast"];
        var (code, _, stderr) = Onnxalign([.. arguments, "--out", whole]);
        Assert.True(code == 0, stderr);

        var start = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = TestSupport.RepositoryRoot };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "OnnxAlign.Cli.dll") }.Concat(arguments).Concat(["--out", resumed]))
            start.ArgumentList.Add(a);
        using (var process = System.Diagnostics.Process.Start(start)!)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            string partial = Path.Combine(resumed, ".partial");
            while (!(File.Exists(Path.Combine(partial, "mixture.json")) && Directory.GetFiles(partial, "batch_*.npy").Length >= 2)
                   && !process.HasExited && clock.Elapsed.TotalSeconds < 120)
                Thread.Sleep(5);
            Assert.False(process.HasExited, "the run finished before it could be killed; make it longer");
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
        }
        Assert.False(File.Exists(Path.Combine(resumed, "samples.npy")));

        (code, var stdout, stderr) = Onnxalign([.. arguments, "--out", resumed, "--resume"]);
        Assert.True(code == 0, stderr);
        Assert.Contains("the mixture's set-up", stdout);
        Assert.False(Directory.Exists(Path.Combine(resumed, ".partial")));
        Assert.True(File.ReadAllBytes(Path.Combine(whole, "samples.npy")).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(resumed, "samples.npy"))));
    }

    [Theory]
    [InlineData("min(direction:{0}/e0.npy|direction:{0}/e1.npy)", "concave")]
    [InlineData("lowrank:{0}/W.npy:bump:0,0,0,1", "neither convex nor concave")]
    public void Generate_align_kl_refuses_rewards_it_cannot_sample_exactly_and_writes_nothing(string spec, string why)
    {
        string dir = Directions(TestSupport.TempDirectory()), output = Path.Combine(TestSupport.TempDirectory(), "never");
        NpyFile.Write(Path.Combine(dir, "W.npy"), [1f, 0f, 0f, 1f, -1f, 0f], [3, 2]);
        var (code, _, stderr) = Onnxalign("generate", Gmm2d, "--reward", string.Format(spec, dir), "--lambda", "0.5", "--out", output);
        Assert.Equal(2, code);
        Assert.Contains(why, stderr);
        Assert.Contains("--align w2", stderr);
        Assert.False(Directory.Exists(output));
    }
}
