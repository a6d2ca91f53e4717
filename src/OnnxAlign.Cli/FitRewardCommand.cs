using System.CommandLine;
using System.Text.Json.Nodes;
using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.IO;
using OnnxAlign.Jobs;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>
/// <c>onnxalign fit-reward MODEL --reward onnx:… --out DIR</c>: a linear or low-rank reward fitted to a network reward
/// (DESIGN §8), written as a linear classifier folder (W.npy, b.npy, classes.json) that every exact method reads
/// (<c>class:NAME@DIR</c>, <c>log-prob:NAME@DIR</c>, constraints, mixtures, the prox), with its held-out agreement.
/// </summary>
internal static class FitRewardCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "The diffusion model whose samples the fit is made on." };
        var reward = new Option<string>("--reward") { Description = "The network reward, onnx:PATH[@CLASS].", Required = true };
        var output = new Option<string>("--out") { Description = "Folder for W.npy, b.npy, classes.json and fit.json.", Required = true };
        var form = new Option<string>("--form") { Description = "linear (r ≈ ⟨w, x⟩ + b; use class:fitted@DIR) or log-prob (every class logit fitted, for a log-softmax card; use log-prob:NAME@DIR or class:NAME@DIR).", DefaultValueFactory = _ => "linear" };
        var count = new Option<int>("--count") { Description = "Base samples to fit on (and hold out from).", DefaultValueFactory = _ => 2048 };
        var steps = new Option<int>("--steps") { Description = "Denoising steps of the base samples.", DefaultValueFactory = _ => 50 };
        var samples = new Option<string?>("--samples") { Description = "Fit on these samples (.npy or a run folder) instead of generating base samples." };
        var heldOut = new Option<double>("--held-out") { Description = "Fraction of the samples held out to measure the agreement.", DefaultValueFactory = _ => 0.25 };
        var ridge = new Option<double>("--ridge") { Description = "Ridge weight, relative to the mean pixel variance.", DefaultValueFactory = _ => 1e-2 };
        var seed = new Option<long>("--seed") { Description = "Sample i uses noise stream seed+i.", DefaultValueFactory = _ => 0 };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace a previous fit in --out." };
        var command = new Command("fit-reward", "Fit a linear or low-rank reward to a network reward, for the exact methods (DESIGN §8).")
            { model, reward, output, form, count, steps, samples, heldOut, ridge, seed, overwrite };
        var runtime = new RuntimeOptions();
        foreach (var option in runtime.All) command.Options.Add(option);
        command.SetAction(parse =>
        {
            var fitForm = parse.GetValue(form) switch
            {
                "linear" => RewardFitForm.Linear,
                "log-prob" => RewardFitForm.LogProb,
                var v => throw new UsageException($"--form '{v}': expected linear or log-prob"),
            };
            double hold = parse.GetValue(heldOut), ridgeWeight = parse.GetValue(ridge);
            if (!(hold is >= 0.05 and <= 0.9)) throw new UsageException($"--held-out {hold}: expected a value in [0.05, 0.9]");
            if (!(ridgeWeight >= 0) || ridgeWeight > 1e6) throw new UsageException($"--ridge {ridgeWeight}: expected a value in [0, 1e6]");
            string outDir = parse.GetValue(output)!;
            if (string.IsNullOrWhiteSpace(outDir)) throw new UsageException("--out: expected a folder, got an empty path");
            var located = DiffusionModel.Locate(parse.GetValue(model)!);
            GenerateCommand.RefusePipeline(located, "fit-reward");
            var options = runtime.For(parse);
            using var denoiser = located.OpenDenoiser(options);
            using var network = RewardSpec.Parse(parse.GetValue(reward)!, denoiser.SampleShape, located.Directory, new NetworkRewardOptions(located.DataRange, options)) as OnnxReward
                ?? throw new UsageException($"--reward '{parse.GetValue(reward)}': fit-reward fits a network reward (onnx:PATH[@CLASS]); this one already has structure");
            if (fitForm == RewardFitForm.LogProb && network.Card.Transform != "log_softmax")
                throw new UsageException($"--form log-prob fits a classifier whose card says 'transform': 'log_softmax'; {network.Card.Source} says '{network.Card.Transform}' (use --form linear)");
            RewardFitRun fitted;
            if (parse.GetValue(samples) is { } given)
            {
                var set = UsageException.ForFlag("--samples", () => SampleSetReader.Read(given));
                if (!set.SampleShape.SequenceEqual(denoiser.SampleShape))
                    throw new UsageException($"--samples {given}: samples of shape [{string.Join(", ", set.SampleShape)}], the model's are [{string.Join(", ", denoiser.SampleShape)}]");
                if (set.Count < RewardFit.MinimumSamples) throw new UsageException($"--samples {given}: {set.Count} samples; the fit needs at least {RewardFit.MinimumSamples}");
                fitted = new RewardFitRun(RewardFit.Fit(network, set.Samples, fitForm, hold, ridgeWeight), RewardFitSource.GivenSamples(given, set.Count));
            }
            else
            {
                int n = GenerateCommand.Positive(parse.GetValue(count), "--count");
                if (n < RewardFit.MinimumSamples) throw new UsageException($"--count {n}: the fit needs at least {RewardFit.MinimumSamples} samples");
                Resources.CheckSamples(n, denoiser.SampleSize, "--count");
                var sampler = GenerateCommand.CreateSampler(null, located.Config, GenerateCommand.Positive(parse.GetValue(steps), "--steps"), 0);
                var request = new GenerationRequest { Count = n, BatchSize = RuntimeOptions.DefaultBatch, Seed = parse.GetValue(seed) };
                fitted = ProgressReporter.Run("base samples", progress =>
                    RewardFit.Run(denoiser, located.DataRange, sampler, network, request, fitForm, hold, ridgeWeight, new InlineProgress<GenerationProgress>(progress)));
            }
            var fit = fitted.Fit;

            using var job = OutputJob.Open(outDir, new OutputJobSettings { Overwrite = parse.GetValue(overwrite) });
            var report = RewardFitReport.Of(network, fit, fitForm, ridgeWeight, fitted.Source, outDir);
            job.Finish(new JobOutput(new JobReport
            {
                Command = "fit-reward", Model = ReportModel.Of(located, denoiser), NetworkEvaluations = fitted.Source.NetworkEvaluations ?? 0,
                Blocks = new JsonObject { ["fit"] = ReportJson.ToNode(report) },
            }, () => RewardFit.WriteFolder(outDir, fit, report)));   // fit.json is the fit's own figures (what a reader of the folder looks for); report.json is the job's
            Console.WriteLine($"fitted {network.Name} by a {parse.GetValue(form)} reward on {fit.TrainSamples} samples: held-out R² {fit.HeldOutRSquared:F3}, " +
                              $"correlation {fit.HeldOutCorrelation:F3}{(fit.HeldOutArgmaxAgreement is { } a ? $", predicted class agrees on {a:P1}" : "")} " +
                              $"({fit.HeldOutSamples} held-out samples; train R² {fit.TrainRSquared:F3})");
            Console.WriteLine($"wrote {Path.GetFullPath(outDir)}: use it as --reward {report.UseAs}");
            return 0;
        });
        return command;
    }
}
