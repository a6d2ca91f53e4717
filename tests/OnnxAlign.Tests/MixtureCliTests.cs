using System.Text.Json.Nodes;
using OnnxAlign.Output;
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
                                               "--steps", "50", "--sampler", "ddim", "--out", output, "--overwrite", "--reference-count", "100");
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
