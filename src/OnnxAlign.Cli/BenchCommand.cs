using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxAlign.Guidance;
using OnnxAlign.Model;
using OnnxAlign.Output;
using OnnxAlign.Prox;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>
/// <c>onnxalign bench</c>: speed ratios measured in one run (never asserted in tests). Untilted and tilted generation
/// alternate, repeat after repeat, so drift of the machine affects both alike; the median of each is reported.
/// </summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "Model to time.", DefaultValueFactory = _ => "models/toy/tiny-unet" };
        var steps = new Option<int>("--steps") { Description = "Steps per run.", DefaultValueFactory = _ => 20 };
        var batch = new Option<int>("--batch") { Description = "Samples per run (one batch).", DefaultValueFactory = _ => 16 };
        var repeats = new Option<int>("--repeats") { Description = "Timed repeats of each variant.", DefaultValueFactory = _ => 5 };
        var threads = new Option<int?>("--threads") { Description = "ONNX Runtime intra-op threads (default: all cores)." };
        var output = new Option<string?>("--out") { Description = "Also write the figures as JSON to this file." };
        var mixture = new Option<bool>("--kl-mixture") { Description = "Instead: evaluations and accuracy of the KL mixture vs importance resampling and best-of-N across λ, on a 2-d toy with known law (models/toy/gmm2d)." };
        var command = new Command("bench", "Time tilted against untilted sampling and the sampler's overhead over the network.") { model, steps, batch, repeats, threads, output, mixture };
        command.SetAction(parse =>
        {
            if (parse.GetValue(mixture))
            {
                var rows = MixtureBench.Run(parse.GetValue(model)!, 2000);
                if (parse.GetValue(output) is { } file)
                    AtomicFile.WriteText(file, new JsonObject { ["kl_mixture"] = rows }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
                return 0;
            }
            int s = GenerateCommand.Positive(parse.GetValue(steps), "--steps");
            int b = GenerateCommand.Positive(parse.GetValue(batch), "--batch");
            int r = GenerateCommand.Positive(parse.GetValue(repeats), "--repeats");
            var located = DiffusionModel.Locate(parse.GetValue(model)!);
            using var denoiser = located.OpenDenoiser(new DenoiserOptions { IntraOpThreads = parse.GetValue(threads) });
            var sampler = Sampler.Create("ddim", located.Config, s);
            var tilt = new LinearTilt(denoiser, RewardSpec.ParseLinear("brightness", denoiser.SampleShape, located.Directory).Tilt(0.05));
            var request = new GenerationRequest { Count = b, BatchSize = b, Seed = 1 };

            Generation.Run(denoiser, sampler, request);  // warm-up: session initialisation, buffers
            Generation.Run(tilt, sampler, request);
            var plain = new List<double>();
            var tilted = new List<double>();
            var network = new List<double>();
            for (int i = 0; i < r; i++)
            {
                var a = Generation.Run(denoiser, sampler, request);
                plain.Add(a.TotalTime.TotalSeconds);
                network.Add(a.ModelTime.TotalSeconds);
                tilted.Add(Generation.Run(tilt, sampler, request).TotalTime.TotalSeconds);
            }
            double plainMedian = Median(plain), tiltedMedian = Median(tilted), networkMedian = Median(network);

            // The prox stage on the same batch, image model in [−1, 1] (box on), one reward per oracle structure.
            var baseSamples = Generation.Run(denoiser, sampler, request).Samples;
            double perEvaluation = networkMedian / (s * b);
            var proxFigures = new JsonArray();
            foreach (var (spec, lambda) in ProxWorkloads(denoiser.SampleShape))
            {
                var oracle = new ProxOracle(RewardSpec.Parse(spec, denoiser.SampleShape, located.Directory),
                    new ProxSettings { Lambda = lambda, Box = ImageFiles.IsImage(denoiser.SampleShape) ? ValueBox.Pixels : null });
                ProxStage.Apply(oracle, baseSamples);  // warm-up
                var times = Enumerable.Range(0, r).Select(_ => ProxStage.Apply(oracle, baseSamples).Time.TotalSeconds).ToList();
                double median = Median(times), perSample = median / b;
                proxFigures.Add(new JsonObject
                {
                    ["reward"] = spec, ["lambda"] = lambda, ["algorithm"] = oracle.Method,
                    ["samples_per_second"] = b / median, ["per_sample_over_network_evaluation"] = perSample / perEvaluation,
                });
            }
            var figures = new JsonObject
            {
                ["model"] = located.OnnxPath,
                ["machine"] = $"{Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}",
                ["steps"] = s,
                ["batch"] = b,
                ["repeats"] = r,
                ["untilted_seconds_median"] = plainMedian,
                ["tilted_seconds_median"] = tiltedMedian,
                ["network_seconds_median"] = networkMedian,
                ["tilted_over_untilted"] = tiltedMedian / plainMedian,
                ["sampling_over_network"] = plainMedian / networkMedian,
                ["samples_per_second_untilted"] = b / plainMedian,
                ["prox"] = proxFigures,
            };
            Console.WriteLine($"{located.OnnxPath}: DDIM {s} steps, batch {b}, {r} repeats (medians)");
            Console.WriteLine($"  untilted              {plainMedian * 1000,9:F1} ms   ({b / plainMedian:F1} samples/s)");
            Console.WriteLine($"  tilted (exact)        {tiltedMedian * 1000,9:F1} ms");
            Console.WriteLine($"  network alone         {networkMedian * 1000,9:F1} ms");
            Console.WriteLine($"  tilted / untilted     {tiltedMedian / plainMedian,9:F3}   (target ≤ 1.05)");
            Console.WriteLine($"  sampling / network    {plainMedian / networkMedian,9:F3}");
            Console.WriteLine($"  prox stage ({Environment.ProcessorCount} workers; per sample vs one network evaluation per sample):");
            foreach (var p in proxFigures)
                Console.WriteLine($"    {p!["reward"],-26} λ={p["lambda"]!.GetValue<double>(),-9:G3} {p["algorithm"],-28} {p["samples_per_second"]!.GetValue<double>(),9:F1} samples/s   {p["per_sample_over_network_evaluation"]!.GetValue<double>(),8:F2}×");
            if (parse.GetValue(output) is { } path)
                AtomicFile.WriteText(path, figures.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            return 0;
        });
        return command;
    }

    /// <summary>A reward per prox structure: linear (closed form), k = 3 concave (Newton), k = 1 Lipschitz (branch-and-bound).</summary>
    private static IEnumerable<(string Spec, double Lambda)> ProxWorkloads(IReadOnlyList<int> shape)
    {
        int size = shape.Aggregate(1, (a, b) => a * b);
        yield return ("brightness", 1.0 / size);
        if (ImageFiles.IsImage(shape)) yield return ($"color-target:{string.Join(",", Enumerable.Repeat("0.8", shape[0]))}", 1.0 / size);
        yield return ("ramp:brightness,0.1,0.3", 0.2 / size);
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
