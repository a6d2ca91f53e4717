using OnnxAlign.Sampling;
using Spectre.Console;

namespace OnnxAlign.Cli;

/// <summary>A progress bar on a terminal; plain progress lines (every 10 %) when output is redirected.</summary>
internal static class ProgressReporter
{
    public static T Run<T>(string title, Func<Action<GenerationProgress>, T> work)
    {
        if (Console.IsErrorRedirected || Console.IsOutputRedirected || Environment.GetEnvironmentVariable("CI") == "true")
        {
            int lastDecile = -1, lastDone = -1;
            return work(p =>
            {
                int decile = p.StepsTotal == 0 ? 10 : (int)(10 * p.StepsDone / p.StepsTotal);
                // A line per 10 % of the steps, and the final one once every sample is finished.
                bool finished = p.SamplesDone == p.SamplesTotal && lastDone != p.SamplesDone;
                if (decile == lastDecile && !finished) return;
                lastDecile = decile;
                lastDone = p.SamplesDone;
                Console.Error.WriteLine($"{title}: {decile * 10}% ({p.SamplesDone}/{p.SamplesTotal} samples)");
            });
        }
        T result = default!;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(title, maxValue: 1.0);
                result = work(p => task.Value = p.StepsTotal == 0 ? 1.0 : (double)p.StepsDone / p.StepsTotal);
                task.Value = 1.0;
            });
        return result;
    }
}
