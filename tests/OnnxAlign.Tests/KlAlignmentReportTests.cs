using System.Text.Json.Nodes;
using OnnxAlign.Alignment;
using OnnxAlign.Estimation;
using OnnxAlign.IO;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;
using Xunit;

namespace OnnxAlign.Tests;

/// <summary>The KL alignment block of report.json is the library's (DESIGN §6: a library user gets everything the CLI does).</summary>
public sealed class KlAlignmentReportTests
{
    /// <summary>
    /// A small fast-tilt run with a reference run and the log Z quadrature, made and reported through the library, gives
    /// the alignment block <c>generate --align kl</c> writes for the same run: the same fields in the same order, with
    /// the same values (the CLI only says the library's options as its flags).
    /// </summary>
    [Fact]
    public void TheLibrarysFastTiltReportIsTheCliReportsAlignmentBlock()
    {
        string output = Path.Combine(TestSupport.TempDirectory(), "run");
        var (code, _, stderr) = CliTests.Onnxalign("generate", TestSupport.Toy("gmm-image"), "--reward", "brightness", "--lambda", "0.05", "--tilt-mode", "fast",
            "--count", "6", "--batch", "4", "--steps", "5", "--sampler", "ddim", "--seed", "3", "--reference-count", "4", "--logz-nodes", "2", "--logz-samples", "8",
            "--out", output);
        Assert.True(code == 0, stderr);
        var cli = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!["alignment"]!;

        var model = DiffusionModel.Locate(TestSupport.Toy("gmm-image"));
        using var network = model.OpenDenoiser();
        var sampler = Sampler.Create("ddim", model.Config, steps: 5);
        var reward = (LinearReward)RewardSpec.Parse("brightness", network.SampleShape, model.Directory);
        const double lambda = 0.05;
        var settings = new KlAlignmentSettings { Mode = KlTiltMode.Fast, Partition = new LogPartitionSettings { Nodes = 2, SamplesPerNode = 8 } };
        var request = new GenerationRequest { Count = 6, BatchSize = 4, Seed = 3 };
        var run = KlAlignment.Run(network, model.DataRange, sampler, reward, lambda, settings, request);
        var inputs = new KlReportInputs
        {
            Network = network, Range = model.DataRange, Sampler = sampler, Request = request, Reward = reward, Lambda = lambda,
            Theta = KlAlignment.TiltOf(reward, lambda), Settings = settings, ReferenceCount = 4, Describe = Cli.Flags.Describe,
        };
        var report = Assert.IsType<FastTiltAlignmentReport>(KlAlignmentReports.Of(run, inputs));
        var withLogZ = report.WithLogPartition(KlAlignmentReports.EstimateLogPartition(inputs, run.Samples.Samples));

        Assert.Equal(cli.ToJsonString(), ReportJson.ToNode(withLogZ).ToJsonString());
        // What the run's total counts beside its samples: the reference run and the quadrature.
        Assert.Equal((long)cli["reference_network_evaluations"]! + (long)cli["logz_network_evaluations"]!, withLogZ.SideNetworkEvaluations());
    }
}
