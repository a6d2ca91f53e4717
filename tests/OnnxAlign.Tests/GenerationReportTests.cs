using System.Text.Json.Nodes;
using OnnxAlign.Evaluation;
using OnnxAlign.Guidance;
using OnnxAlign.IO;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

/// <summary>
/// Issue #16: generate's report.json blocks are the library's typed records (<see cref="GenerationReport"/>): made
/// through the library for the same run, they are what the CLI writes, key for key and value for value.
/// </summary>
public sealed class GenerationReportTests
{
    private static readonly string[] Blocks = ["config", "sampler", "seed", "count", "batch", "init_noise", "shard", "statistics"];

    [Fact]
    public void AToyRunsBlocksWithItsKnownLawsReferenceAreTheCliReports()
    {
        string output = Path.Combine(TestSupport.TempDirectory(), "run");
        var (code, _, stderr) = CliTests.Onnxalign("generate", TestSupport.Toy("gmm2d"), "--count", "12", "--batch", "5", "--steps", "6", "--sampler", "ddim", "--eta", "0.5",
                                                   "--seed", "4", "--out", output);
        Assert.True(code == 0, stderr);
        var cli = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!.AsObject();

        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        using var network = model.OpenDenoiser();
        var sampler = Sampler.Create("ddim", model.Config, 6, eta: 0.5);
        var request = new GenerationRequest { Count = 12, BatchSize = 5, Seed = 4 };
        var report = GenerationReport.Of(model, network, sampler, request, Generation.Run(network, sampler, request));
        var library = ReportJson.ToNode(report).AsObject();

        Assert.Equal([.. Blocks, "reference"], library.Select(kv => kv.Key));
        foreach (string block in Blocks.Append("reference")) Assert.Equal(cli[block]!.ToJsonString(), library[block]!.ToJsonString());
        Assert.Equal(0.5, report.Sampler.Eta);
        Assert.IsType<OnnxAlign.Estimation.SampleMoments>(report.Statistics);   // 2-d samples: full moments
        Assert.Equal(4, report.Reference!.Covariance.Count);
    }

    [Fact]
    public void APromptedLatentRunsConditioningAndLatentBlocksAreTheCliReports()
    {
        string output = Path.Combine(TestSupport.TempDirectory(), "run");
        var (code, _, stderr) = CliTests.Onnxalign("generate", TestSupport.Toy("tiny-sd"), "--prompt", "a red square", "--negative-prompt", "blurry", "--guidance-scale", "5",
                                                   "--count", "2", "--steps", "3", "--out", output);
        Assert.True(code == 0, stderr);
        var cli = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!.AsObject();
        Assert.False(cli.ContainsKey("reference"));   // no known law: the block is left out

        var model = DiffusionModel.Locate(TestSupport.Toy("tiny-sd"));
        using var opened = ConditionedModel.Open(model, new ConditioningOptions { Prompt = "a red square", NegativePrompt = "blurry", GuidanceScale = 5 });
        var conditioning = GenerationReport.ConditioningOf(opened)!;
        Assert.False(conditioning.ModelLaw);
        Assert.Equal(2, conditioning.NetworkRowsPerEvaluation);
        Assert.Equal(cli["conditioning"]!.ToJsonString(), ReportJson.ToNode(conditioning).ToJsonString());
        Assert.Equal(cli["latent"]!.ToJsonString(), ReportJson.ToNode(GenerationReport.LatentOf(opened)!).ToJsonString());
    }
}
