using System.CommandLine;
using System.Diagnostics;
using System.Text.Json.Nodes;
using OnnxAlign.Alignment.Prox;
using OnnxAlign.IO;
using OnnxAlign.Jobs;
using OnnxAlign.Model;
using OnnxAlign.Rewards;

namespace OnnxAlign.Cli;

/// <summary><c>onnxalign prox</c>: Wasserstein alignment of samples a user already has (DESIGN §3).</summary>
internal static class ProxCommand
{
    public static Command Create()
    {
        var input = new Option<string>("--in") { Description = "Samples: a .npy [N, ...], or a folder with a run's samples.npy or with images.", Required = true };
        var reward = new Option<string>("--reward") { Description = $"Reward: {RewardSpec.Forms}.", Required = true };
        var lambda = new Option<double?>("--lambda") { Description = "Price λ > 0 of moving (T(x) = argmax r(y) − λ·c(x, y); smaller = stronger).", Required = true };
        var model = new Option<string?>("--model") { Description = "Model folder whose classifier/ and classes.json class rewards use." };
        var outDir = new Option<string>("--out") { Description = "Output folder.", DefaultValueFactory = _ => "out" };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace a previous run in --out." };
        var threads = new Option<int?>("--threads") { Description = "Worker threads (default: all cores)." };
        var prox = new ProxOptions();
        var command = new Command("prox", "Move each sample to argmax_y r(y) − λ·c(x, y): Wasserstein alignment of given samples.")
        {
            input, reward, lambda, model, outDir, overwrite, threads,
        };
        foreach (var option in prox.All) command.Options.Add(option);
        command.SetAction(parse =>
        {
            var clock = Stopwatch.StartNew();
            string output = parse.GetValue(outDir)!;
            int? workers = parse.GetValue(threads);
            if (workers is < 1) throw new UsageException($"--threads {workers}: expected a positive integer");
            var set = UsageException.ForFlag("--in", () => SampleSetReader.Read(parse.GetValue(input)!));
            string? modelDirectory = parse.GetValue(model) is { } m ? Model.DiffusionModel.Locate(m).Directory : null;
            var oracle = prox.CreateOracle(parse, parse.GetValue(reward)!, parse.GetValue(lambda), set.SampleShape, modelDirectory);
            using var job = OutputJob.Open(output, new OutputJobSettings { Overwrite = parse.GetValue(overwrite) });

            var batch = ProgressReporter.Run("prox", progress => ProxStage.Apply(oracle, set.Samples, progress, workers));
            var report = new JobReport
            {
                Command = "prox",
                TimeSeconds = new Dictionary<string, double> { ["prox"] = RunReport.Round(batch.Time.TotalSeconds), ["total"] = RunReport.Round(clock.Elapsed.TotalSeconds) },
                Blocks = new JsonObject
                {
                    ["input"] = new JsonObject
                    {
                        ["path"] = parse.GetValue(input),
                        ["count"] = set.Count,
                        ["sample_shape"] = RunReport.Array(set.SampleShape.Select(d => (double)d)),
                    },
                    ["alignment"] = ProxOptions.Report(oracle, batch, Enumerable.Range(0, batch.Results.Length).ToArray()),
                },
            };
            var files = job.Finish(new JobOutput(report, () => SampleSetWriter.Write(output, batch.Samples, set.Count, 0, set.SampleShape)))["files"]!.AsArray().Select(f => (string)f!).ToList();
            Console.WriteLine(ProxOptions.Describe(batch));
            Console.WriteLine($"wrote {set.Count} samples to {Path.GetFullPath(output)} ({string.Join(", ", RunReport.Summary(files))})");
            return 0;
        });
        return command;
    }
}
